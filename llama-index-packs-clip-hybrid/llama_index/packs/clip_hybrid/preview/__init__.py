"""The preview page: the shared CLIP space on a map, searched by text, image or both."""

from .projection import PROJECTIONS, Projection, UmapProjection, fit_projection
from .server import PreviewApp, make_server, serve

__all__ = [
    "PROJECTIONS",
    "PreviewApp",
    "Projection",
    "UmapProjection",
    "fit_projection",
    "make_server",
    "serve",
]
