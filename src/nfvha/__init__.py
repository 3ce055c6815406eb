"""nfvha: an availability manager for network functions."""

__version__ = "0.1.0"
