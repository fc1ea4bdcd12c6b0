"""The package version (recorded in preprocessed data and plans)."""
__version__ = "0.1.0"
