"""What an experiment measures in a generated video, per data set, and how the stage configs
follow the data set's clips (channels, label classes).

moving_digits: the digit reader (label match, identity stability, CV residual, class
probabilities for the Inception-Score analogue). bouncing_shapes: the exact physics metrics
(`cascade.evaluation.physics`: ballistic fit, teleports, object permanence, shape and colour
constancy, object count), and how many objects the tracker finds at all: a clip in which it
finds none has nothing to violate, so its violation counts are undefined (NaN), not 0, and
`empty_scene` counts such clips. FVD applies to both and is added by `lab.Lab.measure`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ml_collections
import numpy as np

from cascade.configs import ConfigError

PerClip = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


def _digit_arrays(videos: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    from cascade.evaluation import digits

    per_clip = digits.digit_metrics(videos, labels)
    out = {k: per_clip[k] for k in ("label_match", "identity_stability", "cv_residual")}
    out["class_probs"] = digits.clip_class_probs(videos)
    return out


PHYSICS_ARRAYS = (
    "ballistic_rmse",
    "teleports",
    "permanence_violations",
    "color_changes",
    "shape_constancy",
    "count_stability",
    "num_objects",
    "empty_scene",  # and NEEDS_AN_OBJECT NaN in such a clip (`physics_scoring.score_clip`)
)


def _physics_arrays(videos: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    del labels  # the physics metrics need no label: every object is scored
    from cascade.evaluation import physics

    per_clip = physics.physics_metrics(videos)
    return {k: np.asarray(per_clip[k], np.float64) for k in PHYSICS_ARRAYS}


@dataclasses.dataclass(frozen=True)
class Content:
    """How one data set's videos are measured (per-clip arrays [N] keyed by metric name)."""

    channels: int  # of a clip's frames (the stages' view and model channels follow)
    per_clip: PerClip  # (videos [N, T, H, W, C] in [-1, 1], labels [N]) -> arrays [N] / [N, K]
    coherence: str  # the metric plotted beside FVD: does the video stay one coherent scene
    # The single stage against the cascade: (metric, +1 higher is better / -1 lower), pre-set.
    verdicts: tuple[tuple[str, int], ...]
    # Bumped when per_clip changes what it measures: runs made before are measured again
    # (`lab.Lab.fingerprint`); 1 leaves the fingerprint as it always was.
    version: int = 1


CONTENT: dict[str, Content] = {
    "moving_digits": Content(
        channels=1,
        per_clip=_digit_arrays,
        coherence="identity_stability",
        verdicts=(("fvd", -1), ("identity_stability", +1), ("seconds_per_video", -1)),
    ),
    "bouncing_shapes": Content(
        channels=3,
        per_clip=_physics_arrays,
        coherence="ballistic_rmse",
        verdicts=(
            ("fvd", -1),
            ("empty_scene", -1),
            ("ballistic_rmse", -1),
            ("permanence_violations", -1),
            ("seconds_per_video", -1),
        ),
        version=2,  # 2: num_objects, empty_scene, violations undefined without an object
    ),
}


def of(data_name: str) -> Content:
    """The measurements of `data_name`; a ConfigError naming the supported sets otherwise."""
    if data_name not in CONTENT:
        raise ConfigError(
            f"config.data.name={data_name!r}: the experiments measure only {', '.join(CONTENT)} "
            "(their content metrics need the embedded sets' known contents)."
        )
    return CONTENT[data_name]


def match_data(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` (a stage config) with its view and model channels and its label classes set
    for config.data.name's clips; a no-op for a preset already on that data set (so the
    trained stages' workdir hashes stay what they were)."""
    from cascade.data.loading import num_classes

    channels = of(config.data.name).channels
    config.view.channels = channels
    model = config.model
    if config.stage == "keyframes":
        model.update(in_channels=channels, out_channels=channels)
    elif config.stage in ("temporal_sr", "spatial_sr"):  # low-resolution input concatenated
        model.update(in_channels=2 * channels, out_channels=channels)
    elif config.stage == "video_vae":
        model.in_channels = channels
    if model.get("num_classes", 0) > 0:  # a class-conditional model: the set's classes
        model.num_classes = num_classes(config.data.name)
    return config
