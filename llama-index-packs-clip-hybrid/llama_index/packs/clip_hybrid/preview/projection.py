"""A 2D map of the image vectors: fitted on the images, applied to queries alike.

PCA is the default (exact, fast, and linear: a query lands where the image space puts it).
UMAP is an option when ``umap-learn`` is installed (the ``[umap]`` extra): it keeps local
neighbourhoods better, but it places a new point among its nearest images, so the
modality gap of text queries does not show on a UMAP map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..redaction import package_logger

logger = package_logger(__name__)

PROJECTIONS = ("pca", "umap")
UMAP_MIN_POINTS = 4  # fewer images than this get the PCA map (UMAP needs neighbours)


class Map2D(Protocol):
    """What the server needs of a fitted map (PCA's share of variance, or None)."""

    @property
    def method(self) -> str: ...

    @property
    def explained(self) -> tuple[float, float] | None: ...

    def transform(self, vectors: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray: ...


def fit_projection(vectors: np.ndarray, method: str = "pca") -> Map2D:
    """Fit the map on the image vectors with ``method`` ("pca" or "umap")."""
    if method == "pca":
        return Projection.fit(vectors)
    if method == "umap":
        if len(vectors) < UMAP_MIN_POINTS:
            logger.warning(
                "UMAP needs at least %d images; this map of %d uses PCA.",
                UMAP_MIN_POINTS,
                len(vectors),
            )
            return Projection.fit(vectors)
        return UmapProjection.fit(vectors)
    raise ValueError(f"Unknown projection {method!r}: use one of {', '.join(PROJECTIONS)}.")


@dataclass
class Projection:
    """PCA to 2D, fitted on the image vectors only.

    Queries are projected with the same mean and axes, so a CLIP text vector lands where
    the image space puts it: visibly apart from the image cloud (the modality gap).
    """

    mean: np.ndarray
    axes: np.ndarray  # (2, dim)
    explained: tuple[float, float]
    method: str = field(default="pca", init=False)

    @classmethod
    def fit(cls, vectors: np.ndarray) -> Projection:
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError("PCA needs at least one vector.")
        data = np.asarray(vectors, dtype=np.float32)
        mean = data.mean(axis=0, dtype=np.float64)
        dim = data.shape[1]
        axes = np.zeros((2, dim), dtype=np.float64)
        if len(data) == 1:
            return cls(mean=mean, axes=axes, explained=(0.0, 0.0))
        # The principal axes are the top eigenvectors of the d x d covariance: one pass of
        # n*d^2 multiply-adds (~1 s for 100k x 512 here; a full SVD of the data takes ~13 s).
        centered = data - mean.astype(np.float32)
        covariance = (centered.T @ centered).astype(np.float64)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
        order = np.argsort(eigenvalues)[::-1]
        take = min(2, dim)
        axes[:take] = eigenvectors[:, order[:take]].T
        # A fixed sign per axis (largest loading positive): the map does not flip on refits.
        for i in range(take):
            if axes[i, np.argmax(np.abs(axes[i]))] < 0:
                axes[i] = -axes[i]
        total = float(np.clip(eigenvalues, 0, None).sum()) or 1.0
        top = [max(0.0, float(eigenvalues[j])) / total for j in order[:take]] + [0.0, 0.0]
        return cls(mean=mean, axes=axes, explained=(top[0], top[1]))

    def transform(self, vectors: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        data = np.asarray(vectors, dtype=np.float64)
        if data.ndim == 1:
            data = data[None, :]
        return np.asarray((data - self.mean) @ self.axes.T)


@dataclass
class UmapProjection:
    """UMAP to 2D (cosine metric, seeded: the same images give the same map)."""

    model: Any
    explained: tuple[float, float] | None = None
    method: str = field(default="umap", init=False)

    @classmethod
    def fit(cls, vectors: np.ndarray, seed: int = 0) -> UmapProjection:
        try:
            import umap
        except ImportError as exc:
            raise ImportError(
                "The UMAP projection needs umap-learn: "
                "pip install 'llama-index-packs-clip-hybrid[umap]' (or use projection='pca')."
            ) from exc
        data = np.asarray(vectors, dtype=np.float32)
        n = len(data)
        model = umap.UMAP(
            n_components=2,
            n_neighbors=min(15, n - 1),
            metric="cosine",
            random_state=seed,
            n_jobs=1,  # a seeded UMAP runs on one thread anyway; saying so avoids its warning
            init="spectral" if n > 50 else "random",  # spectral init fails on tiny sets
        )
        model.fit(data)
        return cls(model=model)

    @property
    def embedding(self) -> np.ndarray:
        """The fitted images' coordinates (row order of the fitted vectors)."""
        return np.asarray(self.model.embedding_)

    def transform(self, vectors: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        data = np.asarray(vectors, dtype=np.float32)
        if data.ndim == 1:
            data = data[None, :]
        return np.asarray(self.model.transform(data), dtype=np.float64)
