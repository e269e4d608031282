"""From per-seed, per-clip measurements to the numbers the tables show: each metric per seed,
its mean +- std over seeds, FVD pooled over seeds with the estimator's bootstrap spread, and
every paper comparison's difference with its 95% bootstrap interval and verdict.

A setting is {ablation, setting, view, runs: [(arrays, info) per seed]}; its arrays hold the
per-clip measurements of `lab.Lab.measure` (and psnr, intensity_shift, seconds_per_video
where measured). A comparison is {ablation, reference, setting, metric, expected, paper}.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from cascade.evaluation import feature_distances
from cascade.evaluation.aggregate import finite_mean
from experiments import stats

# metric -> (the per-clip array it is computed from, what it is, better: +1 higher / -1 lower)
METRICS: dict[str, tuple[str, str, int]] = {
    "fvd": ("features", "FVD", -1),
    "inception_score": ("class_probs", "IS analogue", +1),
    "label_match": ("label_match", "label match", +1),
    "identity_stability": ("identity_stability", "identity", +1),
    "cv_residual": ("cv_residual", "CV residual px", -1),
    "psnr": ("psnr", "PSNR dB", +1),
    "intensity_shift": ("intensity_shift", "intensity shift", -1),
    "ballistic_rmse": ("ballistic_rmse", "ballistic RMSE px", -1),
    "teleports": ("teleports", "teleports", -1),
    "permanence_violations": ("permanence_violations", "permanence violations", -1),
    "color_changes": ("color_changes", "colour changes", -1),
    "shape_constancy": ("shape_constancy", "shape constancy", +1),
    "count_stability": ("count_stability", "count stability", +1),
    "num_objects": ("num_objects", "objects found", +1),  # judged against the real clips' count
    "empty_scene": ("empty_scene", "clips without objects", -1),
    "seconds_per_video": ("seconds_per_video", "s / video", -1),
}


def statistic(metric: str, real_features: np.ndarray | None) -> Callable[[np.ndarray], float]:
    """The function from pooled rows of `METRICS[metric][0]` to the metric's value."""
    from cascade.evaluation import digits

    if metric == "fvd":

        def frechet(rows: np.ndarray) -> float:
            if len(np.unique(rows, axis=0)) < 2:  # a draw of one clip has no covariance
                return float("nan")
            return feature_distances.frechet_distance_of_features(real_features, rows)

        return frechet
    if metric == "inception_score":
        return digits.inception_score
    return finite_mean


def runs_of(setting: Mapping[str, Any], metric: str) -> list[np.ndarray] | None:
    """The per-seed arrays a metric needs, or None when the setting did not measure it."""
    field = METRICS[metric][0]
    if not all(field in arrays for arrays, _ in setting["runs"]):
        return None
    return [np.asarray(arrays[field]) for arrays, _ in setting["runs"]]


def num_clips(arrays: Mapping[str, np.ndarray]) -> int:
    """Clips measured in one run: the length of its first per-clip metric array."""
    fields = [f for f, _, _ in METRICS.values() if f in arrays and f != "seconds_per_video"]
    return len(arrays[fields[0]])


def pooled_fvd(
    runs: Sequence[np.ndarray], real: np.ndarray, samples: int, seed: int = 0
) -> dict[str, float]:
    """FVD and KVD of all seeds' videos against the real reference, and FVD's bootstrap std
    over both sides (seeds then clips of the generated set; clips of the real set)."""
    fake = np.concatenate(list(runs), axis=0)
    rng = np.random.default_rng(seed)
    values = []
    sizes = [len(r) for r in runs]
    for _ in range(samples):
        picks = rng.integers(0, len(sizes), size=len(sizes))
        draw = np.concatenate([runs[s][rng.integers(0, sizes[s], size=sizes[s])] for s in picks])
        real_draw = real[rng.integers(0, len(real), size=len(real))]
        values.append(feature_distances.frechet_distance_of_features(real_draw, draw))
    return {
        "fvd": feature_distances.frechet_distance_of_features(real, fake),
        "fvd_std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
        "kvd": feature_distances.kernel_distance(real, fake),
        "num_fake": len(fake),
        "num_real": len(real),
    }


def setting_row(
    setting: Mapping[str, Any], real: np.ndarray | None, exp: ml_collections.ConfigDict
) -> dict[str, Any]:
    """Each metric per seed and its mean / std over seeds; pooled FVD with its spread."""
    row: dict[str, Any] = {
        "ablation": setting["ablation"],
        "setting": setting["setting"],
        "seeds": len(setting["runs"]),
        "videos": sum(num_clips(a) for a, _ in setting["runs"]),
    }
    for metric in METRICS:
        if metric == "fvd" and real is None:
            continue
        runs = runs_of(setting, metric)
        if runs is None:
            continue
        fn = statistic(metric, real)
        per_seed = [fn(r) for r in runs]
        mean, std = stats.mean_std(per_seed)
        row[metric] = {"per_seed": per_seed, "mean": mean, "std": std}
    if real is not None and "fvd" in row:
        pooled = pooled_fvd(runs_of(setting, "fvd"), real, exp.bootstrap.fvd_samples)
        row["fvd"].update(pooled=pooled["fvd"], pooled_std=pooled["fvd_std"])
        row["kvd"] = pooled["kvd"]
    return row


def comparison_seed(c: Mapping[str, Any]) -> int:
    """The bootstrap seed of one comparison, from what it compares: its interval does not
    move when other ablations join or leave the report."""
    key = "|".join(str(c[k]) for k in ("ablation", "reference", "setting", "metric"))
    return zlib.crc32(key.encode())


def summarize(
    settings: Sequence[Mapping[str, Any]],
    comparisons: Sequence[Mapping[str, Any]],
    real: Mapping[str, np.ndarray | None],
    exp: ml_collections.ConfigDict,
) -> dict[str, Any]:
    """{"settings": one row per setting, "verdicts": one row per comparison}."""
    by_name = {(s["ablation"], s["setting"]): s for s in settings}
    rows, seen = [], set()
    for s in settings:  # a setting measured twice (shared by two ablations) is one row each
        if (s["ablation"], s["setting"]) not in seen:
            seen.add((s["ablation"], s["setting"]))
            rows.append(setting_row(s, real[s["view"]], exp))
    verdicts = []
    for c in comparisons:
        ref, other = (
            by_name[(c["ablation"], c["reference"])],
            by_name[(c["ablation"], c["setting"])],
        )
        view_real = real[ref["view"]]
        a, b = runs_of(ref, c["metric"]), runs_of(other, c["metric"])
        row = {**c, "metric_name": METRICS[c["metric"]][1]}
        if a is None or b is None or (c["metric"] == "fvd" and view_real is None):
            row.update(value=None, low=None, high=None, verdict="inconclusive", note="not measured")
        else:
            samples = exp.bootstrap.fvd_samples if c["metric"] == "fvd" else exp.bootstrap.samples
            row.update(
                stats.compare(
                    a,
                    b,
                    statistic(c["metric"], view_real),
                    c["expected"],
                    samples=samples,
                    seed=comparison_seed(c),
                    confidence=exp.bootstrap.confidence,
                )
            )
        verdicts.append(row)
    return {"settings": rows, "verdicts": verdicts}
