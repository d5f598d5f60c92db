"""darkroom: a self-hostable image processing service."""

__version__ = "0.1.0"

__all__ = ["__version__"]
