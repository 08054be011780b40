"""The distribution's version, in a module of its own so that reading it loads nothing else of the package."""

__version__ = "0.1.0"
