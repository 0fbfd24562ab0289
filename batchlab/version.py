"""The version, in a module of its own: every summary records it, and importing the package would import all."""

__version__ = "0.1.0"
