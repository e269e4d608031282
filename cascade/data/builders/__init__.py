"""Embedded procedural TFDS video builders (offline, deterministic from a seed).

Importing this package registers `moving_digits` and `bouncing_shapes` with TFDS.
Named sizes are the builder configs 'default', 'small' and 'tiny'; any other size
comes from `clips_config(...)`, whose name encodes every field, so differently
sized data sets never share a directory.

    builder = make_builder("moving_digits", data_dir, clips_config(64, 16, 8, 32))
    prepare(builder)                                   # builds if not yet built
    ds = builder.as_data_source("train")               # random access by index

`bouncing_shapes` also comes with sound (`make_builder(..., sound=True)`, registered as
`bouncing_shapes_sound`): the same clips plus a synchronized impact track.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from cascade.data.builders.base import PRESETS, ClipsConfig, config_name, prepare
from cascade.data.builders.bouncing_shapes import BouncingShapes
from cascade.data.builders.bouncing_shapes_sound import BouncingShapesSound
from cascade.data.builders.moving_digits import MovingDigits

EMBEDDED_BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "moving_digits": MovingDigits,
    "bouncing_shapes": BouncingShapes,
}
# Embedded sets that also exist with a synchronized sound track (data.sound=True).
SOUND_BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "bouncing_shapes": BouncingShapesSound,
}

__all__ = [
    "EMBEDDED_BUILDERS",
    "BouncingShapes",
    "BouncingShapesSound",
    "ClipsConfig",
    "MovingDigits",
    "SOUND_BUILDERS",
    "clips_config",
    "make_builder",
    "prepare",
]


def clips_config(
    num_train: int, num_test: int, frames: int, resolution: int, seed: int = 0
) -> ClipsConfig:
    """A builder config of any size; its name encodes all fields (see `config_name`).

    Returns the matching named preset ('default', 'small', 'tiny') when the sizes
    and seed equal one, so the same data is never built twice under two names.
    """
    fields = dict(
        num_train=int(num_train),
        num_test=int(num_test),
        frames=int(frames),
        resolution=int(resolution),
        seed=int(seed),
    )
    for preset in PRESETS:
        if all(getattr(preset, k) == v for k, v in fields.items()):
            return preset
    return ClipsConfig(
        name=config_name(**fields),
        version="1.0.0",
        description="Custom size: {num_train}/{num_test} clips, {frames} frames, "
        "{resolution}x{resolution}, seed {seed}.".format(**fields),
        **fields,
    )


def make_builder(
    name: str,
    data_dir: str | os.PathLike,
    config: ClipsConfig | str = "default",
    *,
    sound: bool = False,
) -> tfds.core.GeneratorBasedBuilder:
    """The builder `name` ('moving_digits' | 'bouncing_shapes') in `data_dir`.

    Args:
      config: a preset name or a `ClipsConfig` (e.g. from `clips_config`).
      sound: the variant with a synchronized sound track (names in SOUND_BUILDERS).
    """
    if name not in EMBEDDED_BUILDERS:
        raise ValueError(f"Unknown embedded data set {name!r}; known: {sorted(EMBEDDED_BUILDERS)}.")
    if sound and name not in SOUND_BUILDERS:
        raise ValueError(f"{name!r} has no sound; data sets with sound: {sorted(SOUND_BUILDERS)}.")
    cls = SOUND_BUILDERS[name] if sound else EMBEDDED_BUILDERS[name]
    return cls(data_dir=os.fspath(data_dir), config=config)
