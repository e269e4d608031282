"""The summary of experiments/long_video.py over training seeds: each method's metrics
averaged over clips, then over training seeds (with their std and per-seed values), and each
method's whole-clip content metrics against the bidirectional DiT's with a 95% hierarchical
bootstrap interval (training seeds, then clips; paired: every method continues the same
clips with the same sampling keys).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cascade.evaluation.aggregate import finite_mean
from experiments import stats
from experiments.long_video_metrics import METRICS


def summarize_method(method: str, done: list[dict[str, Any]], preview: np.ndarray) -> dict:
    """One method's row over training seeds: `done` holds its facts per training seed
    (metrics as `long_video_metrics` returns them, less per_clip; cost per frame), `preview`
    its first clips at training seed 0 (uint8, for the side-by-side videos)."""
    first = done[0]["metrics"]
    metrics: dict[str, Any] = {
        "starts": first["starts"],
        "fvd_reason": first["fvd_reason"],
        "windows": {
            k: [
                mean_or_none(v, k)
                for v in zip(*(d["metrics"]["windows"][k] for d in done), strict=True)
            ]
            for k in first["windows"]
        },
        "whole": {},
        "whole_std": {},
        "whole_per_seed": {},
    }
    for k in first["whole"]:
        values = [d["metrics"]["whole"][k] for d in done]
        metrics["whole"][k] = mean_or_none(values, k)
        metrics["whole_std"][k] = None if metrics["whole"][k] is None else stats.mean_std(values)[1]
        metrics["whole_per_seed"][k] = values
    return {
        "method": method,
        "video": preview.astype(np.float32) / 127.5 - 1.0,
        "seconds_per_frame": float(np.mean([d["seconds_per_frame"] for d in done])),
        "flops_per_frame": done[0]["flops_per_frame"],
        "loops_counted_once": done[0]["loops_counted_once"],
        "metrics": metrics,
    }


def mean_or_none(values, metric: str) -> float | None:
    """The mean of the finite values: None for an FVD that was not computed (FVD off), NaN
    for a content metric without one finite value (computed but undefined, e.g. no digit
    read; stored runs keep NaN as null)."""
    if metric == "fvd" and all(v is None for v in values):
        return None
    return stats.mean_std(values)[0]


# Whole-clip metrics where higher is better (the others: lower is better).
HIGHER_IS_BETTER = ("identity",)
REFERENCE = "latent_dit"  # the bidirectional DiT: what the other two are compared with


def differences(
    dataset: str, methods: tuple[str, ...], per_seed: list[dict[str, np.ndarray]], samples: int
) -> list[dict[str, Any]]:
    """Each method's whole-clip content metrics minus the bidirectional DiT's: the difference
    of NaN-aware means pooled over training seeds, its 95% hierarchical-bootstrap interval
    (training seeds, then clips; paired), and which is better ('inconclusive' when the
    interval contains 0, 'undefined' when a side has no finite value). `per_seed`: one run's
    arrays per training seed ('<method>__whole__<metric>' [clips])."""
    rows = []
    for method in methods:
        if method == REFERENCE:
            continue
        for metric in METRICS[dataset]:
            ref = [a[f"{REFERENCE}__whole__{metric}"] for a in per_seed]
            ours = [a[f"{method}__whole__{metric}"] for a in per_seed]
            diff = stats.bootstrap_difference(ref, ours, finite_mean, samples=samples)
            better = +1 if metric in HIGHER_IS_BETTER else -1
            observed = stats.verdict(diff["low"], diff["high"], better)
            names = {"agrees": f"{method} better", "disagrees": f"{REFERENCE} better"}
            verdict = names.get(observed, "inconclusive")
            if not np.isfinite(diff["value"]):  # e.g. violations where no clip has an object
                verdict = "undefined"
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "reference": REFERENCE,
                    "metric": metric,
                    "difference": diff["value"],
                    "low": diff["low"],
                    "high": diff["high"],
                    "verdict": verdict,
                }
            )
    return rows
