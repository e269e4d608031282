"""Distances between two sets of features [N, D]: the Fréchet distance of fitted Gaussians
(FID / FVD) and the unbiased polynomial-kernel MMD^2 (KID / KVD), in float64.

Kept apart from the I3D feature extractor (`fvd`) because the experiments' bootstraps call
these thousands of times on cached features, with no network involved.
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D], in float64."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D], got {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), in float64.

    tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the inner matrix is symmetric
    PSD, so `eigh` gives it stably even when S1, S2 are singular (N < D, the usual case
    for FVD), where `scipy.linalg.sqrtm(S1 @ S2)` returns complex noise. Eigenvalues
    under the rounding level (and negatives) count as 0. Checked in tests against the
    exact low-rank form tr((S1 S2)^(1/2)) = ||Xc Yc^T||_* / sqrt((N-1)(M-1)).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    s1_half = _psd_sqrt(s1)
    inner = s1_half @ s2 @ s1_half
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    tr_covmean = np.sqrt(_drop_rounding_zeros(eigenvalues)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    return float(max(value, 0.0))  # a squared distance; only rounding makes it negative


def frechet_distance_of_features(x: np.ndarray, y: np.ndarray) -> float:
    """`frechet_distance` of the Gaussians fitted to features x [N, D] and y [M, D] (means,
    unbiased covariances), in float64.

    With centred features Xc, Yc: tr(S1) = ||Xc||_F^2 / (N - 1), and the nonzero eigenvalues
    of S1 S2 are the squared singular values of Xc Yc^T / sqrt((N - 1)(M - 1)), so
    tr((S1 S2)^(1/2)) is the nuclear norm of that N x M matrix: exact, and for the usual FVD
    sizes (N, M of a few hundred, D = 1024) ~50x cheaper than the two D x D eigendecompositions
    of the covariance form, which serves sets larger than D.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    (n, d), m = x.shape, y.shape[0]
    if n < 2 or m < 2 or y.shape[1] != d:
        raise ValueError(f"need features [N >= 2, D] and [M >= 2, D], got {x.shape}, {y.shape}")
    if n * m * min(n, m) > d**3:  # large sets: the D x D form is the cheaper one
        return frechet_distance(*feature_statistics(x), *feature_statistics(y))
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    singular = np.linalg.svd(xc @ yc.T, compute_uv=False)
    tr_covmean = singular.sum() / np.sqrt((n - 1) * (m - 1))
    diff = mx - my
    value = diff @ diff + (xc * xc).sum() / (n - 1) + (yc * yc).sum() / (m - 1) - 2.0 * tr_covmean
    return float(max(value, 0.0))  # a squared distance; only rounding makes it negative


def kernel_distance(
    x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None, coef: float = 1.0
) -> float:
    """Unbiased MMD^2 with the polynomial kernel k(a, b) = (gamma a.b + coef) ** degree.

    gamma defaults to 1 / D (Binkowski et al. 2018, "Demystifying MMD GANs"; the KID/KVD
    kernel). Can be slightly negative when the two samples come from one distribution.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"KVD needs >= 2 samples per side, got {m} and {n}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    kxx = (gamma * x @ x.T + coef) ** degree
    kyy = (gamma * y @ y.T + coef) ** degree
    kxy = (gamma * x @ y.T + coef) ** degree
    sum_xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    sum_yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sum_xx + sum_yy - 2.0 * kxy.mean())


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh (negatives clipped)."""
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(_drop_rounding_zeros(eigenvalues))) @ vectors.T


def _drop_rounding_zeros(eigenvalues: np.ndarray) -> np.ndarray:
    """Zero eigenvalues below the rounding level of the largest (and negatives).

    With N < D the covariances are singular; the sqrt of their ~1e-16 * max rounding
    eigenvalues would otherwise add up to a 1e-8 relative error in the trace.
    """
    tol = eigenvalues.max(initial=0.0) * eigenvalues.shape[0] * np.finfo(np.float64).eps
    return np.where(eigenvalues > tol, eigenvalues, 0.0)
