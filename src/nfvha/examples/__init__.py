"""Example network functions managed by nfvha."""
