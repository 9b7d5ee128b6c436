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
