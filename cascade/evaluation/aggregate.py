"""Averaging per-clip metrics, where a clip may have no reading (NaN: no digit read, no
ballistic fit, no clean frame).

`np.nanmean` warns "Mean of empty slice" when every clip lacks a reading; that is an expected
outcome here (e.g. a model that draws no object), so these return NaN quietly instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def finite_mean(values: np.ndarray) -> float:
    """Mean of the finite entries of `values` (any shape); NaN when there are none."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def summarize(per_clip: Mapping[str, np.ndarray]) -> dict[str, float]:
    """{metric: finite_mean over clips} of per-clip metric arrays [N], for a metrics JSON."""
    return {key: finite_mean(value) for key, value in per_clip.items()}
