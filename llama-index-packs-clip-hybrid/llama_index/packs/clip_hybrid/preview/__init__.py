"""The preview page: the shared CLIP space on a map, searched by text, image or both."""

from .projection import Projection
from .server import PreviewApp, make_server, serve

__all__ = ["PreviewApp", "Projection", "make_server", "serve"]
