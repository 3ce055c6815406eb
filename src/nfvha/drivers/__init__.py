"""Drivers: one per real resource, each primitive with a stated contract."""
