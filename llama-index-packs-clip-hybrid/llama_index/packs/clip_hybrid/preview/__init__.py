"""The preview page: the shared CLIP space on a map, searched by text, image or both."""

from .app import PreviewApp
from .http import PreviewServer, make_server, serve
from .projection import PROJECTIONS, Projection, UmapProjection, fit_projection

__all__ = [
    "PROJECTIONS",
    "PreviewApp",
    "PreviewServer",
    "Projection",
    "UmapProjection",
    "fit_projection",
    "make_server",
    "serve",
]
