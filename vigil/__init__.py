"""Vigil: crypto trading automation in one process and one event loop."""
