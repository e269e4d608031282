"""How a long continuation looks as a video, beyond per-frame fidelity to the true frames:
content metrics over the whole extended clip and FVD of its windows (VDM sec. 3.1 / table 6
measure extension by FVD). Used by `--condition=frames` evaluation and by
experiments/continuation_methods.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cascade.evaluation import evaluate
from cascade.evaluation.fvd import FeatureCache
from cascade.stages.stage import ShapeMismatchError


def clip_windows(videos: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping windows [N * (F // length), length, H, W, C] of clips [N,F,H,W,C] (a
    last partial window is dropped), clip by clip: clip i's windows come before clip i+1's."""
    n, f = videos.shape[:2]
    count = f // length
    if count < 1:
        raise ShapeMismatchError(f"clips of {f} frames hold no window of {length} frames")
    cut = np.asarray(videos[:, : count * length])
    return cut.reshape(n * count, length, *videos.shape[2:])


def extension_quality(
    video: np.ndarray,
    real: np.ndarray,
    *,
    data_name: str,
    labels: np.ndarray | None = None,
    fvd_videos: int = 0,
    fvd_window: int = 16,
    cache: FeatureCache | None = None,
) -> dict[str, Any]:
    """What a long continuation looks like as a video, beyond per-frame fidelity.

    video: [N,F,H,W,C] in [-1, 1], the whole extended clip (given frames included); real:
    [M,R,H,W,C] real clips of the same view (R >= fvd_window for FVD). Returns
      "content": over the whole extended clip, moving_digits: identity_stability (fraction
        of frames a tracked digit keeps its class), cv_residual (px, motion residual of a
        constant-velocity fit), label_match (with labels); bouncing_shapes: teleports,
        permanence_violations (behind the occluder), ballistic_rmse (px) and the rest of
        `physics.physics_metrics`; {} for other data sets;
      "fvd_windows": FVD / KVD of the non-overlapping `fvd_window`-frame windows of the
        extended clips against the real clips' windows (first `fvd_videos` of each side;
        {"fvd": None, "reason": ...} when off or impossible).
    """
    content = evaluate.content_metrics(video, data_name, labels)
    out: dict[str, Any] = {"content": next(iter(content.values()), {})}
    length = min(fvd_window, video.shape[1], real.shape[1])
    if fvd_videos < 2:
        out["fvd_windows"] = {"fvd": None, "reason": f"FVD off (fvd_videos={fvd_videos})"}
    elif length < evaluate.MIN_I3D_FRAMES:
        out["fvd_windows"] = {
            "fvd": None,
            "reason": f"{length}-frame windows are shorter than the {evaluate.MIN_I3D_FRAMES} "
            "frames the Kinetics I3D needs",
        }
    else:
        fake_w, real_w = clip_windows(video, length), clip_windows(real, length)
        fvd = evaluate.fvd_metrics(real_w, fake_w, fvd_videos, cache=cache)
        fvd["window_frames"] = int(length)
        fvd["windows_per_clip"] = int(video.shape[1] // length)
        out["fvd_windows"] = fvd
    return out
