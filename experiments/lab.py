"""What the settings of an experiment share: trained stages (one per config and seed, reused
through their markers), distilled students, the labels each seed samples for, the real clips
and their I3D features (computed once, kept on disk), and the per-clip measurements of a
batch of generated videos.

Seed k of every setting samples the labels of test clips [k n, (k + 1) n) (n = videos per
seed) with the same key, so settings compare paired and the pooled generated set carries the
labels of the first seeds x n test clips, like the real reference.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments import common, content, runs

# Views of the ablated stages: 16-frame keyframes (>= 9 frames: FVD applies), and the
# spatial SR stage taking them to twice the height and width.
VIEWS = {
    "keyframes": {"view.frames": 16, "view.frame_stride": 1},
    "spatial_sr": {"view.frames": 16},
}


class Lab:
    """Training, sampling and measuring for one experiment config `exp` (see
    configs/experiments/vdm_ablations.py for its fields)."""

    def __init__(self, exp: ml_collections.ConfigDict):
        from cascade.evaluation.fvd import FeatureCache, FVDProtocol

        self.exp = exp
        self.n = exp.videos_per_seed
        self.store = runs.RunStore(Path(exp.out) / "runs", self.fingerprint())
        self.train_seconds: dict[str, float] = {}
        self._memo: dict[Any, np.ndarray] = {}  # labels and real clips, read once
        self._loaded: dict[Any, Any] = {}  # the last LOADED_KEPT stages `load` returned
        self.fvd_cache = FeatureCache()
        # One protocol for every row: 16 frames, the real reference's size recorded; one I3D
        # compilation serves any number of clips (batches padded).
        self.protocol = FVDProtocol(
            num_videos=max(2, exp.real_videos), clip_length=16, batch_size=min(8, self.n)
        )

    def fingerprint(self) -> str:
        """The experiment's fingerprint (`runs.fingerprint`) over its config and the presets of
        every cascade and single-stage model at its stage_preset."""
        stages = ("keyframes", "temporal_sr", "spatial_sr", "video_vae", "latent_dit")
        hashes = {
            s: common.config_hash(common.stage_config(s, self.exp.stage_preset, "fingerprint"))
            for s in stages
        }
        version = content.of(self.exp.data.get("name", "moving_digits")).version
        if version > 1:  # what per_clip measures changed: earlier runs are measured again
            hashes["content_version"] = str(version)
        return runs.fingerprint(self.exp.to_dict(), hashes)

    # -- configs and trained stages -------------------------------------------------------------
    def config(
        self, stage: str, seed: int, overrides: Mapping[str, Any] | None = None
    ) -> ml_collections.ConfigDict:
        """configs/<stage>.py:<stage_preset> on the experiment's data and view, its steps, batch
        and sampling steps, `seed`, and the ablated `overrides` (dotted keys)."""
        e = self.exp
        overrides = dict(overrides or {})
        data = dict(e.data.to_dict(), frames=e.data.frames)
        num_train = overrides.pop("data.num_train", None)
        if num_train is not None:
            data["num_train"] = num_train
        config = common.stage_config(
            stage, e.stage_preset, e.data_dir, {**VIEWS[stage], **overrides}, data=data
        )
        config.seed = seed
        config.train.batch_size = e.batch_size
        common.set_steps(config, e.train_steps[stage])
        config.sample.steps = e.sample_steps[stage]
        return config

    def trained(self, stage: str, seed: int, overrides: Mapping[str, Any] | None = None) -> Path:
        """The workdir of the trained (or reused, or resumed) stage."""
        config = self.config(stage, seed, overrides)
        workdir, seconds = common.train_stage(config, self.exp.workdirs, stage)
        self.train_seconds[workdir.name] = self.train_seconds.get(workdir.name, 0.0) + seconds
        return workdir

    def distilled(
        self,
        teacher: Path,
        seed: int,
        steps: int,
        start_steps: int | None = None,
        steps_per_round: int | None = None,
    ) -> Path:
        """The progressive-distillation student of `teacher` sampling in `steps` DDIM (flow:
        Euler) steps: halving rounds of `steps_per_round` optimizer steps from `start_steps`
        (default: the config's distillation.teacher_steps and .steps_per_round), each round's
        student its own workdir (so 8, 4 and 2 steps are one chain of rounds, and each is
        reused when finished)."""
        start = start_steps or self.exp.distillation.teacher_steps
        per_round = steps_per_round or self.exp.distillation.steps_per_round
        while start > steps:
            config = common.distill_config(
                teacher, start, start // 2, per_round, self.exp.stage_preset, seed
            )
            workdir, seconds = common.train_distilled(config, self.exp.workdirs)
            self.train_seconds[workdir.name] = seconds
            teacher, start = workdir, start // 2
        return teacher

    def load(self, workdir: Path, **sample: Any):
        """A trained stage reading the experiment's data, its sampler options updated. The
        last few are kept: settings sharing a model and sampler (and every seed's chain
        reading one keyframe model twice) restore it and trace its sampler once."""
        from cascade.training.trained import config_from_checkpoint, load_trained

        key = (str(workdir), tuple(sorted(sample.items())))
        if key not in self._loaded:
            config = config_from_checkpoint(workdir)
            config.data.data_dir = str(self.exp.data_dir)
            config.sample.update(sample)
            if len(self._loaded) >= LOADED_KEPT:
                self._loaded.pop(next(iter(self._loaded)))  # the oldest
            self._loaded[key] = load_trained(workdir, config)
        return self._loaded[key]

    # -- labels and real clips ------------------------------------------------------------------
    def seed_slice(self, seed: int) -> slice:
        return slice(seed * self.n, (seed + 1) * self.n)

    def labels(self, seed: int) -> np.ndarray:
        """Labels [n] seed `seed` samples for (test clips [seed n, (seed + 1) n))."""
        from cascade.data import pipeline

        if "labels" not in self._memo:  # read once: a TFDS read costs seconds
            base = self.config("keyframes", 0)
            clips = pipeline.test_clips(base.data, self.exp.seeds * self.n)
            self._memo["labels"] = np.asarray(clips["label"]).astype(np.int32)
        return self._memo["labels"][self.seed_slice(seed)]

    def real(self, stage: str, num: int) -> np.ndarray:
        """The first `num` real test clips [num, T, H, W, 1] seen through `stage`'s view."""
        from cascade.evaluation.evaluate import real_videos

        if (stage, num) not in self._memo:
            self._memo[(stage, num)] = real_videos(self.config(stage, 0), num)
        return self._memo[(stage, num)]

    def real_features(self, stage: str) -> np.ndarray | None:
        """I3D features [real_videos, D] of the real reference at `stage`'s view (on disk
        once computed); None with FVD off."""
        if not self.exp.fvd:
            return None

        def compute():
            return {"features": self.features(self.real(stage, self.exp.real_videos))}, {}

        arrays, _ = self.store.get(f"real/{stage}", compute)
        return arrays["features"]

    # -- measuring ------------------------------------------------------------------------------
    def features(self, videos: np.ndarray) -> np.ndarray:
        """I3D features [N, D] of the first 16 frames of `videos` [N, T >= 16, H, W, 1]."""
        extractor = self.fvd_cache.extractor(self.protocol)
        return extractor(videos[:, :16])

    def measure(self, videos: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Per-clip arrays of generated `videos` [N, T, H, W, C] sampled for `labels` [N]: the
        data set's content metrics (`content.CONTENT`: for moving_digits label_match,
        identity_stability, cv_residual [N] (NaN: no reading) and class_probs [N, 10]; for
        bouncing_shapes the physics metrics [N]), I3D features [N, D], and the first clips as
        uint8 for the report's GIFs (`preview`)."""
        out = content.of(self.exp.data.get("name", "moving_digits")).per_clip(videos, labels)
        out["preview"] = preview(videos)
        if self.exp.fvd:
            out["features"] = self.features(videos)
        return out

    def sample_timed(self, trained, cond: dict[str, np.ndarray], key: jax.Array, **kw):
        """(videos, seconds per video of a second, compiled call)."""
        trained.sample(cond, key, **kw)  # compiles
        start = time.perf_counter()
        videos = trained.sample(cond, key, **kw)
        return videos, (time.perf_counter() - start) / len(videos)


LOADED_KEPT = 4  # trained stages Lab.load keeps (a keyframe and an SR model for two seeds)
PREVIEW_CLIPS = 4  # clips of each run kept for the GIFs (uint8: 64 KB at 16 x 32 x 32 x 1)


def preview(videos: np.ndarray) -> np.ndarray:
    """The first PREVIEW_CLIPS of `videos` [N, T, H, W, C] in [-1, 1] as uint8 [n, T, H, W, C]
    (`video_io.to_uint8`'s rounding, the channels kept as they are)."""
    from cascade import video_io

    clips = np.asarray(videos[:PREVIEW_CLIPS])
    return video_io.to_uint8(clips)[..., : clips.shape[-1]]


def key(seed: int) -> jax.Array:
    """The sampling key of seed `seed` (the same for every setting)."""
    return jax.random.key(1000 + seed)


def psnr_per_clip(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """PSNR (dB) [N] of clips in [-1, 1] (peak-to-peak 2) over all their pixels."""
    mse = ((np.asarray(pred, np.float64) - target) ** 2).reshape(len(pred), -1).mean(1)
    return 10.0 * np.log10(4.0 / np.maximum(mse, 1e-12))


def intensity_shift(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """|mean intensity of each output clip - its target's| [N], in [-1, 1] units: the
    grey-scale analogue of the colour shift Imagen Video reports for eps-prediction SR."""
    axes = tuple(range(1, np.ndim(pred)))
    return np.abs(np.mean(pred, axis=axes) - np.mean(target, axis=axes))
