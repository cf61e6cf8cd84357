"""StyleLoop: the library every service and client imports."""

__version__ = "0.1.0"
