"""One path from a data config to clips: embedded builders and real TFDS video sets.

Every data set comes out in the common format

    {"video": uint8 [T, H, W, C], "label": int64 [], ...extra features}

with T = data_cfg.frames and H = W = data_cfg.resolution.

* Embedded sets (`moving_digits`, `bouncing_shapes`) are built into
  `data_cfg.data_dir` on first use, at the size the config asks for
  (num_train, num_test, frames, resolution, seed); their extra features
  (digit positions, object states) are passed through. With `data_cfg.sound`
  (default False; bouncing_shapes only) the clips also carry `audio` (int16 PCM
  [T * samples_per_frame], see `builders.bouncing_shapes_sound`) and their impacts
  in `states`; the video and the other states are the same clips as without sound.
* Real TFDS sets (`moving_mnist`, `bair_robot_pushing_small`, `ucf101`; a TFDS
  config can be named as in `ucf101/ucf101_1`) are read from `data_dir` as the
  user prepared them; nothing is downloaded. Frames are taken from the start of
  each clip (every `frame_stride`-th one, default 1), centre-cropped to a square
  and resized (area filter down, bilinear up) to the configured resolution.
  Sets without labels get label 0.

A `ClipSource` is one split: `dataset()` reads it in stored order as a
tf.data.Dataset; when the files are ArrayRecord (always for the embedded sets;
real sets built with `--file_format=array_record`) `gather(indices)` reads any
clips by index, which the input pipeline uses for exact, resumable shuffling.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from cascade.configs import ConfigError
from cascade.data import builders

EMBEDDED = tuple(builders.EMBEDDED_BUILDERS)


@dataclasses.dataclass(frozen=True)
class RealSet:
    """How a real TFDS video set maps onto the common format."""

    video_key: str
    label_key: str | None
    num_classes: int
    splits: Mapping[str, str]  # our split name -> TFDS split string
    prepare_hint: str = ""


REAL: dict[str, RealSet] = {
    # Only a 'test' split of 10,000 sequences exists; we hold out its last 10%.
    "moving_mnist": RealSet(
        "image_sequence", None, 0, {"train": "test[:90%]", "test": "test[90%:]"}
    ),
    "bair_robot_pushing_small": RealSet("image_main", None, 0, {"train": "train", "test": "test"}),
    "ucf101": RealSet(
        "video",
        "label",
        101,
        {"train": "train", "test": "test"},
        prepare_hint=" (UCF-101 is ~6.5 GB to download; the default config is ucf101_1_256)",
    ),
}
KNOWN_DATASETS: tuple[str, ...] = EMBEDDED + tuple(REAL)


class DatasetNotFoundError(FileNotFoundError):
    """A real data set is not prepared in data_dir (the message says how to prepare it)."""


class UnknownDatasetError(DatasetNotFoundError, ValueError):
    """A data set name that is neither embedded nor a supported TFDS set."""


SPLITS = ("train", "test")
_REQUIRED = object()


def cfg_get(cfg: Any, key: str, default: Any = _REQUIRED) -> Any:
    """Reads `key` from a ConfigDict, a Mapping or an object, with a clear error."""
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    if value is _REQUIRED:
        raise KeyError(f"The data config has no field {key!r} (needed by cascade.data).")
    return value


def split_name(name: str) -> tuple[str, str | None]:
    """'ucf101/ucf101_1' -> ('ucf101', 'ucf101_1'); checks the name is known."""
    base, _, config = str(name).partition("/")
    if base not in KNOWN_DATASETS:
        raise UnknownDatasetError(
            f"Unknown data set {name!r}. Known data sets: {', '.join(KNOWN_DATASETS)} "
            "(a TFDS config may follow a slash, e.g. 'ucf101/ucf101_1')."
        )
    if base in EMBEDDED and config:
        raise ValueError(
            f"{name!r}: embedded data sets take their size from the data config "
            "(num_train, num_test, frames, resolution, seed), not from a config name."
        )
    return base, config or None


def num_classes(name: str) -> int:
    """Number of label classes of a data set (0: no labels, train unconditionally)."""
    base, _ = split_name(name)
    if base == "moving_digits":
        return builders.moving_digits.NUM_CLASSES
    if base == "bouncing_shapes":
        return len(builders.bouncing_shapes.SHAPES)
    return REAL[base].num_classes


def _data_dir(data_cfg: Any) -> str | None:
    data_dir = cfg_get(data_cfg, "data_dir", None)
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir))) if data_dir else None


def embedded_config(data_cfg: Any) -> builders.ClipsConfig:
    """The builder config an embedded set is built with, from the data config."""
    return builders.clips_config(
        num_train=cfg_get(data_cfg, "num_train"),
        num_test=cfg_get(data_cfg, "num_test"),
        frames=cfg_get(data_cfg, "frames"),
        resolution=cfg_get(data_cfg, "resolution"),
        seed=cfg_get(data_cfg, "seed", 0),
    )


def get_builder(data_cfg: Any, *, build: bool = True) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder for `data_cfg.name` in `data_cfg.data_dir`.

    Embedded sets are built if missing (unless build=False). A real set that is
    not prepared in data_dir raises DatasetNotFoundError naming where it looked and
    how to prepare it; nothing is ever downloaded. An unknown name raises
    UnknownDatasetError (also a ValueError) listing the known names.
    """
    name = cfg_get(data_cfg, "name")
    base, config = split_name(name)
    data_dir = _data_dir(data_cfg)
    sound = bool(cfg_get(data_cfg, "sound", False))
    if sound and base not in builders.SOUND_BUILDERS:
        raise ConfigError(
            f"sound=True (config.data.sound / --sound), but {name!r} has no sound track; "
            f"data sets with sound: {', '.join(builders.SOUND_BUILDERS)}."
        )
    if base in EMBEDDED:
        args = (base, data_dir or _default_dir(), embedded_config(data_cfg))
        builder = builders.make_builder(*args, sound=sound)
        if not builder.is_prepared():
            if not build:
                raise DatasetNotFoundError(f"{name!r} is not built in {builder.data_dir}.")
            builder = _prepare_once(builder, lambda: builders.make_builder(*args, sound=sound))
        return builder
    tfds_name = f"{base}/{config}" if config else base
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        root = data_dir or "the default TFDS data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
        raise DatasetNotFoundError(
            f"Data set {name!r} (TFDS {builder.info.full_name}) is not prepared in {root}: "
            f"looked for {builder.data_dir}. Nothing is downloaded here. Prepare it on a "
            f"machine with internet access{REAL[base].prepare_hint} with\n"
            f"    tfds build {tfds_name} --data_dir={data_dir or '~/tensorflow_datasets'}\n"
            "(add --file_format=array_record for exact, cheaply resumable shuffling), "
            "then copy that directory here."
        )
    return builder


# Threads of one process (stages trained side by side: cascade.training.concurrent) that
# need the same missing set would race on TFDS's temporary folders: one builds, the rest wait.
_BUILD_LOCK = threading.Lock()


def _prepare_once(
    builder: tfds.core.DatasetBuilder, reopen: Callable[[], tfds.core.DatasetBuilder]
) -> tfds.core.DatasetBuilder:
    """Build an embedded set; with several processes, process 0 builds and the others wait.

    Every process of a multi-host run reaches this point (the same configs, the same order).
    Building into a shared data_dir from every host at once races on TFDS's temporary folders;
    a host whose data_dir is its own local disk still finds nothing after the barrier and
    builds its own copy (the builders are deterministic, so every copy is the same).
    """
    if jax.process_count() == 1:
        with _BUILD_LOCK:  # another thread may have built it while this one waited
            builder = reopen()
            if not builder.is_prepared():
                builders.prepare(builder)
        return builder
    if jax.process_index() == 0:
        builders.prepare(builder)
    multihost_utils.sync_global_devices(f"cascade-build-{builder.name}")
    builder = reopen()
    if not builder.is_prepared():
        builders.prepare(builder)
    return builder


def _default_dir() -> str:
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def supports_random_access(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether the prepared files can be read by index (ArrayRecord)."""
    formats = [builder.info.file_format, *getattr(builder.info, "alternative_file_formats", [])]
    array_record = tfds.core.file_adapters.FileFormat.ARRAY_RECORD
    return any(f == array_record or getattr(f, "value", f) == "array_record" for f in formats)


def _fit_video(video: tf.Tensor, frames: int, resolution: int, stride: int) -> tf.Tensor:
    """[L, H, W, C] uint8 -> [frames, resolution, resolution, C] uint8.

    Takes every `stride`-th frame from the start (repeating the last frame if the
    clip is too short), centre-crops to a square and resizes (area down,
    bilinear up).
    """
    video = video[::stride][:frames]
    missing = frames - tf.shape(video)[0]
    video = tf.concat([video, tf.repeat(video[-1:], tf.maximum(missing, 0), axis=0)], axis=0)
    if video.shape[1] == video.shape[2] == resolution:  # static: already the right size
        return tf.ensure_shape(video, (frames, resolution, resolution, video.shape[-1]))
    h, w = tf.shape(video)[1], tf.shape(video)[2]
    s = tf.minimum(h, w)
    video = video[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    size = (resolution, resolution)
    video = tf.cond(
        s >= resolution,
        lambda: tf.image.resize(video, size, method="area"),
        lambda: tf.image.resize(video, size, method="bilinear"),
    )
    video = tf.cast(tf.clip_by_value(tf.round(video), 0.0, 255.0), tf.uint8)
    channels = video.shape[-1]
    return tf.ensure_shape(video, (frames, resolution, resolution, channels))


@dataclasses.dataclass
class ClipSource:
    """One split of a data set, in the common format (see the module docstring)."""

    name: str
    split: str
    builder: tfds.core.DatasetBuilder
    tfds_split: str
    num_examples: int
    to_common: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]

    @property
    def random_access(self) -> bool:
        return supports_random_access(self.builder)

    def dataset(self, shard_index: int = 0, num_shards: int = 1) -> tf.data.Dataset:
        """Every clip of the split (or of one of `num_shards` equal shards), in stored order."""
        if self.random_access:
            n = self.num_examples // num_shards
            idx = tf.data.Dataset.range(n).map(lambda i: i * num_shards + shard_index)
            return self.gather(idx)
        split = self.tfds_split
        if num_shards > 1:
            split = tfds.even_splits(split, n=num_shards, drop_remainder=True)[shard_index]
        ds = self.builder.as_dataset(
            split=split,
            shuffle_files=False,
            read_config=tfds.ReadConfig(try_autocache=False, interleave_cycle_length=1),
        )
        return ds.map(self.to_common, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def gather(self, indices: tf.data.Dataset) -> tf.data.Dataset:
        """Maps a dataset of int64 clip indices to clips (needs `random_access`)."""
        if not self.random_access:
            raise ValueError(
                f"{self.name!r} is stored as {self.builder.info.file_format}, which has no "
                "random access; rebuild it with --file_format=array_record."
            )
        source = self.builder.as_data_source(split=self.tfds_split)
        spec = self.builder.info.features.get_tensor_spec()
        flat_spec = tf.nest.flatten(spec)

        def fetch(i):
            flat = tf.nest.flatten(source[int(i)])
            return [
                np.asarray(x, s.dtype.as_numpy_dtype) for x, s in zip(flat, flat_spec, strict=True)
            ]

        def tf_fetch(i):
            flat = tf.numpy_function(fetch, [i], [s.dtype for s in flat_spec], stateful=False)
            flat = [tf.ensure_shape(x, s.shape) for x, s in zip(flat, flat_spec, strict=True)]
            return self.to_common(tf.nest.pack_sequence_as(spec, flat))

        return indices.map(tf_fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def open_source(data_cfg: Any, split: str) -> ClipSource:
    """The `ClipSource` of `split` ('train' | 'test') for `data_cfg` (see `get_builder`)."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}.")
    name = cfg_get(data_cfg, "name")
    base, _ = split_name(name)
    builder = get_builder(data_cfg)
    if base in EMBEDDED:
        tfds_split, to_common = split, _embedded_to_common
    else:
        real = REAL[base]
        tfds_split = real.splits[split]
        frames = int(cfg_get(data_cfg, "frames"))
        resolution = int(cfg_get(data_cfg, "resolution"))
        stride = int(cfg_get(data_cfg, "frame_stride", 1))
        _check_length(name, builder, real, frames, stride)
        to_common = _real_to_common(real, frames, resolution, stride)
    num = int(builder.info.splits[tfds_split].num_examples)
    return ClipSource(name, split, builder, tfds_split, num, to_common)


def load_dataset(data_cfg: Any, split: str) -> tf.data.Dataset:
    """All clips of `split` as a tf.data.Dataset in the common format, stored order."""
    return open_source(data_cfg, split).dataset()


def _embedded_to_common(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {**ex, "label": tf.cast(ex["label"], tf.int64)}


def _real_to_common(real: RealSet, frames: int, resolution: int, stride: int):
    def to_common(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        label = ex[real.label_key] if real.label_key else tf.constant(0, tf.int64)
        video = _fit_video(ex[real.video_key], frames, resolution, stride)
        return {"video": video, "label": tf.cast(label, tf.int64)}

    return to_common


def _check_length(name: str, builder, real: RealSet, frames: int, stride: int) -> None:
    length = builder.info.features.shape[real.video_key][0]
    if length is not None and (frames - 1) * stride + 1 > length:
        raise ValueError(
            f"{name!r} clips have {length} frames; data.frames={frames} with "
            f"frame_stride={stride} needs {(frames - 1) * stride + 1}."
        )
