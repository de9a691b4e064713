"""Vigil: crypto trading automation in one process and one event loop."""
__version__ = "0.9.0"
