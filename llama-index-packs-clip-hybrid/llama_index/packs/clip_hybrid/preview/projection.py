"""A 2D map of the image vectors: PCA fitted on the images, applied to queries alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Projection:
    """PCA to 2D, fitted on the image vectors only.

    Queries are projected with the same mean and axes, so a CLIP text vector lands where
    the image space puts it: visibly apart from the image cloud (the modality gap).
    """

    mean: np.ndarray
    axes: np.ndarray  # (2, dim)
    explained: tuple[float, float]

    @classmethod
    def fit(cls, vectors: np.ndarray) -> Projection:
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError("PCA needs at least one vector.")
        mean = vectors.mean(axis=0)
        centered = vectors - mean
        if len(vectors) == 1:
            axes = np.zeros((2, vectors.shape[1]), dtype=np.float64)
            return cls(mean=mean, axes=axes, explained=(0.0, 0.0))
        # SVD of the centered data: the right singular vectors are the principal axes.
        _, singular, vt = np.linalg.svd(centered, full_matrices=False)
        axes = np.zeros((2, vectors.shape[1]), dtype=np.float64)
        take = min(2, vt.shape[0])
        axes[:take] = vt[:take]
        # A fixed sign per axis (largest loading positive): the map does not flip on refits.
        for i in range(take):
            if axes[i, np.argmax(np.abs(axes[i]))] < 0:
                axes[i] = -axes[i]
        variance = singular**2
        total = float(variance.sum()) or 1.0
        ratios = [float(v / total) for v in variance[:2]] + [0.0, 0.0]
        return cls(mean=mean, axes=axes, explained=(ratios[0], ratios[1]))

    def transform(self, vectors: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        data = np.asarray(vectors, dtype=np.float64)
        if data.ndim == 1:
            data = data[None, :]
        return np.asarray((data - self.mean) @ self.axes.T)
