"""Spread and verdicts over seeds and samples: mean +- std over seeds, the hierarchical
bootstrap (seeds, then clips within each seed) of a statistic and of the difference between
two settings, and the verdict a difference supports.

A setting's measurements are one array per seed, clips on the first axis (per-clip metric
values [N], class probabilities [N, 10], I3D features [N, D]). A statistic maps the pooled
rows of all seeds to a number (a mean, the Inception-Score analogue, FVD against the real
features). Two settings are compared *paired* when their seeds hold the same number of
clips (the experiments give seed k of every setting the same labels and the same sampling
key): one resample of seed and clip indices serves both sides, so what they share cancels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Runs = Sequence[np.ndarray]  # one array per seed, clips on axis 0
Statistic = Callable[[np.ndarray], float]

VERDICTS = ("agrees", "disagrees", "inconclusive")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the finite `values`;
    (NaN, NaN) when none is finite."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if not len(x):
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def _resample(rng: np.random.Generator, sizes: Sequence[int]) -> list[tuple[int, np.ndarray]]:
    """One hierarchical bootstrap draw: seeds with replacement, then clips within each seed."""
    seeds = rng.integers(0, len(sizes), size=len(sizes))
    return [(int(s), rng.integers(0, sizes[s], size=sizes[s])) for s in seeds]


def _pool(runs: Runs, draw: list[tuple[int, np.ndarray]]) -> np.ndarray:
    return np.concatenate([np.asarray(runs[s])[idx] for s, idx in draw], axis=0)


def bootstrap(
    runs: Runs, statistic: Statistic, *, samples: int, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """`statistic` of the pooled runs and its hierarchical-bootstrap std and interval."""
    rng = np.random.default_rng(seed)
    sizes = [len(r) for r in runs]
    values = np.array([statistic(_pool(runs, _resample(rng, sizes))) for _ in range(samples)])
    return {"value": statistic(np.concatenate(list(runs), axis=0)), **_spread(values, confidence)}


def bootstrap_difference(
    a: Runs,
    b: Runs,
    statistic: Statistic,
    *,
    samples: int,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """statistic(b) - statistic(a) pooled over seeds, with its bootstrap interval (paired
    draws when every seed of `a` and `b` holds as many clips; independent draws otherwise)."""
    rng = np.random.default_rng(seed)
    sizes_a, sizes_b = [len(r) for r in a], [len(r) for r in b]
    paired = sizes_a == sizes_b
    diffs = []
    for _ in range(samples):
        draw_a = _resample(rng, sizes_a)
        draw_b = draw_a if paired else _resample(rng, sizes_b)
        diffs.append(statistic(_pool(b, draw_b)) - statistic(_pool(a, draw_a)))
    whole = statistic(np.concatenate(list(b), axis=0)) - statistic(np.concatenate(list(a), axis=0))
    return {"value": whole, **_spread(np.array(diffs), confidence), "paired": paired}


def _spread(values: np.ndarray, confidence: float) -> dict[str, float]:
    """std and the central `confidence` percentile interval of the finite bootstrap values."""
    finite = values[np.isfinite(values)]
    # Draws where the statistic is undefined (no readable digit) are dropped; if more than
    # half are, the interval is not reported.
    if len(finite) < max(2, len(values) // 2):
        return {"std": float("nan"), "low": float("nan"), "high": float("nan")}
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return {"std": float(finite.std(ddof=1)), "low": float(low), "high": float(high)}


def verdict(low: float, high: float, expected: int) -> str:
    """'agrees' / 'disagrees' when the interval [low, high] of a difference excludes 0 and its
    sign is / is not `expected` (+1: the paper says it goes up, -1: down); 'inconclusive'
    when it contains 0 or is undefined."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    if low > 0:
        observed = 1
    elif high < 0:
        observed = -1
    else:
        return "inconclusive"
    return "agrees" if observed == expected else "disagrees"


def compare(
    a: Runs, b: Runs, statistic: Statistic, expected: int, **bootstrap_kwargs: Any
) -> dict[str, Any]:
    """The difference b - a, its interval, and the verdict against the `expected` sign."""
    diff = bootstrap_difference(a, b, statistic, **bootstrap_kwargs)
    return {**diff, "verdict": verdict(diff["low"], diff["high"], expected)}
