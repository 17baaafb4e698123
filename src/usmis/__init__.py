"""USMIS: the Unified State Medical Information System."""

__version__ = "0.1.0"
