"""The ``clip-hybrid`` command: index a folder, search it, score it, serve the page."""

from .main import main

__all__ = ["main"]
