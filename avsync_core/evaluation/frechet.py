"""The Frechet distance of FID and FVD, as the official ``dists.frechet_distance`` defines it.

d² = |mu1 − mu2|² + tr(S1) + tr(S2) − 2 tr(sqrtm(S1 S2)), with unbiased float64 covariances and SciPy's Schur
matrix square root; when the product is too singular for it, eps = 1e-6 is added to both diagonals, and a small
imaginary part of the root (numerical noise) is dropped. Features are accumulated as float64 sums (shifted by
the first batch's mean, so the covariance does not cancel), so a folder's clips never need to be held at once.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..errors import InvalidInputError

log = logging.getLogger(__name__)
_EPS = 1e-6
_IMAGINARY_TOLERANCE = 1e-3


class FeatureStats:
    """Running mean and unbiased covariance of feature rows (n, d), in float64."""

    def __init__(self) -> None:
        self.count = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def add(self, features: torch.Tensor | np.ndarray) -> None:
        x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else features
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise InvalidInputError(f"Features must be rows shaped (n, dim), got {x.shape}.")
        if self._shift is None:
            self._shift = x.mean(axis=0)
            self._sum = np.zeros_like(self._shift)
            self._outer = np.zeros((x.shape[1], x.shape[1]))
        elif x.shape[1] != self._shift.shape[0]:
            raise InvalidInputError(f"Features of size {x.shape[1]} cannot join features of size {self.dim}.")
        centred = x - self._shift
        self._sum += centred.sum(axis=0)
        self._outer += centred.T @ centred
        self.count += x.shape[0]

    @property
    def dim(self) -> int:
        return 0 if self._shift is None else self._shift.shape[0]

    @property
    def mean(self) -> np.ndarray:
        self._need(1)
        return self._shift + self._sum / self.count

    @property
    def cov(self) -> np.ndarray:
        self._need(2)
        offset = self._sum / self.count
        return (self._outer - self.count * np.outer(offset, offset)) / (self.count - 1)

    def _need(self, n: int) -> None:
        if self.count < n:
            raise InvalidInputError(f"A Frechet distance needs at least {n} feature rows per set, got {self.count}.")

    @classmethod
    def of(cls, features: torch.Tensor | np.ndarray) -> FeatureStats:
        stats = cls()
        stats.add(features)
        return stats


def frechet_distance(first: FeatureStats, second: FeatureStats) -> float:
    """The official Frechet distance between two feature sets' Gaussians."""
    if first.dim != second.dim:
        raise InvalidInputError(f"Cannot compare features of size {first.dim} with features of size {second.dim}.")
    mu1, mu2 = first.mean, second.mean
    sigma1, sigma2 = first.cov, second.cov
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("Frechet distance: singular covariance product; adding %g to the diagonals", _EPS)
        offset = np.eye(sigma1.shape[0]) * _EPS
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=_IMAGINARY_TOLERANCE):
            raise InvalidInputError(
                f"The Frechet distance is undefined here: the covariance product's square root has an imaginary "
                f"part of {np.abs(covmean.imag).max():.3g}; use more clips (at least as many as feature dimensions)."
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """SciPy's matrix square root without the error estimate: the official call passes ``disp=False``, which
    SciPy 1.16 deprecates; the root itself is the same. SciPy is imported here: it is in the ``eval`` extra."""
    try:
        from scipy import linalg
    except ImportError:
        raise InvalidInputError("FID and FVD need SciPy's matrix square root: pip install 'scipy>=1.10'.") from None
    return np.asarray(linalg.sqrtm(matrix))
