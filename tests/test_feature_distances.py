"""Distances between feature sets: closed forms of the Fréchet distance, its N x M form
against the covariance form, and the unbiased kernel MMD."""

import numpy as np
import pytest
import scipy.linalg

from cascade.evaluation.feature_distances import (
    feature_statistics,
    frechet_distance,
    frechet_distance_of_features,
    kernel_distance,
)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2.
    got = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert got == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2, rel=1e-12)
    # Diagonal: ||dm||^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = rng.uniform(0.1, 4, 50), rng.uniform(0.1, 4, 50)
    m1, m2 = rng.normal(size=50), rng.normal(size=50)
    want = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(want, rel=1e-10)
    # Full rank, general: agrees with scipy's sqrtm.
    x, y = rng.normal(size=(500, 40)), rng.normal(size=(500, 40)) @ rng.normal(size=(40, 40))
    (mx, sx), (my, sy) = feature_statistics(x), feature_statistics(y)
    covmean = scipy.linalg.sqrtm(sx @ sy).real
    want = ((mx - my) ** 2).sum() + np.trace(sx + sy - 2 * covmean)
    assert frechet_distance(mx, sx, my, sy) == pytest.approx(want, rel=1e-10)
    # Rank-deficient (N < D, as with FVD on few clips): the exact form
    # tr((S1 S2)^1/2) = nuclear norm of Xc Yc^T / (N - 1).
    x, y = 3 * rng.normal(size=(8, 400)), rng.normal(size=(8, 400)) + 1
    (mx, sx), (my, sy) = feature_statistics(x), feature_statistics(y)
    nuclear = np.linalg.svd((x - mx) @ (y - my).T / 7, compute_uv=False).sum()
    want = ((mx - my) ** 2).sum() + np.trace(sx) + np.trace(sy) - 2 * nuclear
    assert frechet_distance(mx, sx, my, sy) == pytest.approx(want, rel=1e-12)
    assert frechet_distance(mx, sx, mx, sx) == pytest.approx(0.0, abs=1e-9 * np.trace(sx))


def test_frechet_distance_of_features_equals_the_covariance_form():
    """The N x M nuclear-norm form from features agrees with the D x D covariance form: both
    sets below D, one above D (full rank), sets of different sizes, and the large-set path."""
    rng = np.random.default_rng(1)
    mix = np.eye(40) + 0.3 * rng.normal(size=(40, 40))
    for n, m in ((8, 12), (50, 10), (300, 200)):
        x = rng.normal(size=(n, 40)) * rng.uniform(0.2, 3.0, 40)
        y = rng.normal(size=(m, 40)) @ mix + 0.5
        want = frechet_distance(*feature_statistics(x), *feature_statistics(y))
        assert frechet_distance_of_features(x, y) == pytest.approx(want, rel=1e-10), (n, m)
    assert frechet_distance_of_features(x, x) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance_of_features(x[:1], y)


def test_kernel_distance_unbiased_and_exact():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 0.5
    k = lambda a, b: (a @ b / 3 + 1) ** 3
    xx = np.mean([k(x[i], x[j]) for i in range(5) for j in range(5) if i != j])
    yy = np.mean([k(y[i], y[j]) for i in range(4) for j in range(4) if i != j])
    xy = np.mean([k(a, b) for a in x for b in y])
    assert kernel_distance(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    # Same distribution: ~0 (unbiased), far below a shifted one.
    a, b = rng.normal(size=(400, 20)), rng.normal(size=(400, 20))
    same, shifted = kernel_distance(a, b), kernel_distance(a, b + 1.0)
    assert abs(same) < 0.02 * shifted
