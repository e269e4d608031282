"""Shared machinery of the procedural TFDS video builders.

A procedural builder renders every clip from a per-clip numpy Generator seeded by
(config seed, split, clip index), so a clip does not depend on how many clips are
built, in which order, or in how many chunks: the data set is a pure function of
its `ClipsConfig`. Nothing is downloaded.

Frames are stored as raw uint8 bytes (`tfds.features.Tensor(encoding=BYTES)`);
`tfds.features.Video` would PNG-encode every frame, which measured ~50x slower.
Files are written as ArrayRecord, which gives random access by index
(`builder.as_data_source(split)`): the input pipeline draws an exact per-epoch
permutation and can resume at any step without reading the skipped clips.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

SPLITS = ("train", "test")
_SPLIT_IDS = {"train": 0, "test": 1}
# Clips rendered together: the vectorized physics runs over a chunk of clips.
CHUNK = 64


@dataclasses.dataclass
class ClipsConfig(tfds.core.BuilderConfig):
    """Size of a procedural video data set.

    Attributes:
      num_train, num_test: number of clips in the train / test splits.
      frames: clip length T.
      resolution: frame height = width, in pixels.
      seed: generation seed; clips are a pure function of (seed, split, index).
    """

    num_train: int = 1000
    num_test: int = 100
    frames: int = 32
    resolution: int = 64
    seed: int = 0


def config_name(num_train: int, num_test: int, frames: int, resolution: int, seed: int) -> str:
    """Name encoding every size field, e.g. 'n1000-100_t32_r64_s0'."""
    return f"n{num_train}-{num_test}_t{frames}_r{resolution}_s{seed}"


def _presets() -> list[ClipsConfig]:
    """Named sizes shared by the embedded builders (the same objects in both).

    'default': 1000/100 clips of 32 frames at 64x64 (the contract's default size);
    'small': 256/64 clips of 16 frames at 32x32 (quick experiments);
    'tiny': 16/8 clips of 8 frames at 32x32 (tests).
    """
    sizes = {
        "default": (1000, 100, 32, 64),
        "small": (256, 64, 16, 32),
        "tiny": (16, 8, 8, 32),
    }
    return [
        ClipsConfig(
            name=name,
            version="1.0.0",
            description=f"{n_tr}/{n_te} clips, {t} frames, {r}x{r}.",
            num_train=n_tr,
            num_test=n_te,
            frames=t,
            resolution=r,
        )
        for name, (n_tr, n_te, t, r) in sizes.items()
    ]


PRESETS = _presets()


def _validate(cfg: ClipsConfig, min_resolution: int) -> None:
    for field in ("num_train", "num_test", "frames"):
        if int(getattr(cfg, field)) < 1:
            raise ValueError(f"ClipsConfig.{field} must be >= 1, got {getattr(cfg, field)}.")
    if int(cfg.resolution) < min_resolution:
        raise ValueError(
            f"ClipsConfig.resolution must be >= {min_resolution}, got {cfg.resolution}."
        )
    if int(cfg.seed) < 0:
        raise ValueError(f"ClipsConfig.seed must be >= 0, got {cfg.seed}.")


class ProceduralVideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: subclasses define `_features()` and `_render_chunk(rngs, cfg, split)`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    DESCRIPTION = ""
    MIN_RESOLUTION = 16

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's default resolves the package through `importlib_resources`, which is
        # not a dependency here; the source file is all it needs (checksums lookup).
        return epath.Path(inspect.getfile(cls))

    def _log_download_bytes(self) -> None:
        # TFDS's own line says "Downloading and preparing dataset ... (download: Unknown
        # size ...)", which is false here: these clips are rendered locally from code.
        print(f"Building {self.name} locally (rendered from code, nothing is downloaded) ...")

    def _log_download_done(self) -> None:
        print(f"Built {self.name} in {self.data_dir}; later runs reuse it.")

    def _features(self, cfg: ClipsConfig) -> dict[str, Any]:
        raise NotImplementedError

    def _render_chunk(
        self, rngs: list[np.random.Generator], cfg: ClipsConfig, split: str
    ) -> list[dict[str, Any]]:
        """Renders one clip per Generator; returns a list of feature dicts."""
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        _validate(cfg, self.MIN_RESOLUTION)
        # DatasetInfo(builder=self) rather than dataset_info_from_configs(): the latter
        # looks for metadata files next to the module and fails outside a TFDS package.
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(self._features(cfg)),
            # Keep clip i at position i on disk: data sources index clips directly.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # procedural: nothing to download
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        cfg = self.builder_config
        num = int(cfg.num_train if split == "train" else cfg.num_test)
        for start in range(0, num, CHUNK):
            idx = range(start, min(num, start + CHUNK))
            rngs = [np.random.default_rng([int(cfg.seed), _SPLIT_IDS[split], i]) for i in idx]
            yield from zip(idx, self._render_chunk(rngs, cfg, split), strict=True)


def video_feature(frames: int, resolution: int, channels: int) -> tfds.features.Tensor:
    """uint8 [T,H,W,C] stored as raw bytes (no per-frame image encoding)."""
    return tfds.features.Tensor(
        shape=(frames, resolution, resolution, channels),
        dtype=np.uint8,
        encoding=tfds.features.Encoding.BYTES,
    )


def prepare(builder: tfds.core.DatasetBuilder) -> None:
    """Builds `builder` as ArrayRecord files (no statistics, nothing downloaded)."""
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP
        ),
    )
