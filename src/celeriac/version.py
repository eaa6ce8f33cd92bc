"""The version of celeriac."""

__version__ = "0.1.0"
