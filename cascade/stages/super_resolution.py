"""Temporal and spatial super-resolution stages (Imagen Video / Make-A-Video).

Both generate a target clip conditioned on a lower-rate or lower-resolution
version of it. The conditioning clip is put on the target grid (frame
repetition or linear interpolation in time, bilinear in space) and
concatenated to z_t on channels. Noise conditioning augmentation (Cascaded
Diffusion Models): in training the conditioning clip is corrupted by the
forward process at a random level and the network is told that level; at
sampling a fixed level from config is used.

With `sr.residual` the stage diffuses the residual between the target and its
upsampled input (target - upsample(cond)) and adds the upsampled input back
after sampling: an untrained network already returns the trivial baseline, and
training only has to learn what the upsampler gets wrong.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cascade.configs import ConfigError, check_choice, ensure_divisible
from cascade.data import views
from cascade.diffusion import gaussian
from cascade.stages.gaussian import GaussianStage
from cascade.stages.stage import Batch, Shape

TEMPORAL_UPSAMPLERS = ("repeat", "linear")


def temporal_upsample(cond: jax.Array, factor: int, mode: str) -> jax.Array:
    """[B,T,H,W,C] -> [B,T*factor,H,W,C]; frame i of the input sits at output frame i*factor."""
    if mode == "repeat":
        return jnp.repeat(cond, factor, axis=1)
    t_low = cond.shape[1]
    pos = jnp.arange(t_low * factor) / factor
    i0 = jnp.floor(pos).astype(jnp.int32)
    i1 = jnp.minimum(i0 + 1, t_low - 1)
    w = (pos - i0).reshape(1, -1, 1, 1, 1)
    return (1.0 - w) * cond[:, i0] + w * cond[:, i1]


def spatial_upsample(cond: jax.Array, factor: int) -> jax.Array:
    """Bilinear [B,T,h,w,C] -> [B,T,h*factor,w*factor,C] (half-pixel centres, like box down)."""
    b, t, h, w, c = cond.shape
    return jax.image.resize(cond, (b, t, h * factor, w * factor, c), "bilinear")


class SuperResolutionStage(GaussianStage):
    """Shared by both SR kinds; `kind` decides the grid and how conditioning is upsampled."""

    kind = ""

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        v, sr = config.view, config.sr
        if sr.factor < 2:
            raise ConfigError(f"config.sr.factor must be >= 2, got {sr.factor}.")
        expected_in = 2 * v.channels
        if (
            self.model_config.in_channels != expected_in
            or self.model_config.out_channels != v.channels
        ):
            raise ConfigError(
                f"config.model: a {self.name} U-Net sees z_t and the upsampled conditioning "
                f"concatenated, so in_channels must be {expected_in} and out_channels "
                f"{v.channels}; got {self.model_config.in_channels} and "
                f"{self.model_config.out_channels}."
            )
        if sr.noise_aug and not self.model_config.use_aug_cond:
            raise ConfigError(
                "config.sr.noise_aug=True needs config.model.use_aug_cond=True so the network "
                "is told the augmentation level."
            )
        if self.train_frames > v.frames:
            raise ConfigError(
                f"config.sr.crop_frames={self.train_frames} exceeds config.view.frames="
                f"{v.frames}: a training window cannot be longer than the clip."
            )

    @property
    def train_frames(self) -> int:
        """Frames per training clip: `sr.crop_frames`, or the whole clip (0 or unset: stages
        trained before the key existed)."""
        return self.config.sr.get("crop_frames", 0) or self.config.view.frames

    def temporal_crop(self, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random window of `train_frames` frames of target clips [B,T,H,W,C] (training
        only; evaluation and sampling see whole clips)."""
        if self.train_frames == target.shape[1]:
            return target
        return views.random_window(target, self.train_frames, rng)

    @property
    def output_shape(self) -> Shape:
        v = self.config.view
        return (v.frames, v.resolution, v.resolution, v.channels)

    @property
    def input_shape(self) -> Shape:
        return self.input_shape_for(self.output_shape)

    @abc.abstractmethod
    def input_shape_for(self, output_shape: Shape) -> Shape:
        """The conditioning clip's (frames, height, width, channels) for an output of
        `output_shape`."""

    def batch_spec(self, batch_size: int) -> dict:
        """Training batches: `train_frames` frames of `network_size` squares (crops)."""
        spec = super().batch_spec(batch_size)
        c = self.config.view.channels
        video = (self.train_frames, self.network_size, self.network_size, c)
        spec["video"] = jax.ShapeDtypeStruct((batch_size, *video), jnp.float32)
        spec["cond"] = jax.ShapeDtypeStruct((batch_size, *self.input_shape_for(video)), jnp.float32)
        return spec

    def make_batch(self, clips: Batch, rng: np.random.Generator) -> Batch:
        return self._pair(clips, rng, train=True)

    def eval_batch(self, clips: Batch, rng: np.random.Generator) -> Batch:
        return self._pair(clips, rng, train=False)

    @abc.abstractmethod
    def _pair(self, clips: Batch, rng: np.random.Generator, train: bool) -> Batch:
        """{"video": target, "cond": its degraded version, "label"} from raw clips; `train`:
        random frame windows (and spatial crops), else whole clips."""

    @abc.abstractmethod
    def upsample(self, cond: jax.Array) -> jax.Array:
        """Put the conditioning clip [B, *input_shape] on the target grid [B, *output_shape]."""

    @property
    def residual(self) -> bool:
        """config.sr.residual (False for stages trained before the key existed)."""
        return bool(self.config.sr.get("residual", False))

    def diffusion_target(self, batch: Batch) -> jax.Array:
        if not self.residual:
            return batch["video"]
        return batch["video"] - self.upsample(batch["cond"].astype(jnp.float32))

    def from_diffusion_target(self, x: jax.Array, cond: Batch) -> jax.Array:
        if not self.residual:
            return x
        return x + self.upsample(cond["cond"].astype(jnp.float32))

    def x0_clip(self, cond: Batch):
        clip = self.config.sample.clip_x0
        if not (self.residual and clip):
            return clip
        # Clip the video, not the residual: upsample(cond) + x^ stays in [-c, c], the range a
        # plain stage's x^ is clipped to.
        c = 1.0 if clip is True else float(clip)
        up = self.upsample(cond["cond"].astype(jnp.float32))
        return (-c - up, c - up)

    def conditioning(self, batch: Batch, key: jax.Array, *, train: bool):
        sr = self.config.sr
        up = self.upsample(batch["cond"].astype(jnp.float32))
        if not sr.noise_aug:
            return up, None
        b = up.shape[0]
        k_t, k_eps = jax.random.split(key)
        if train:
            t_aug = jax.random.uniform(k_t, (b,), maxval=sr.aug_max_t)
        else:
            t_aug = jnp.full((b,), sr.sample_aug_t)
        aug_logsnr = self.schedule(t_aug)
        noisy = gaussian.q_sample(up, eps=jax.random.normal(k_eps, up.shape), logsnr=aug_logsnr)
        return noisy, aug_logsnr


class TemporalSRStage(SuperResolutionStage):
    """frames/k low-rate frames -> frames frames at the same resolution."""

    name = "temporal_sr"

    def __init__(self, config):
        super().__init__(config)
        check_choice(config.sr.upsample, TEMPORAL_UPSAMPLERS, "sr.upsample")
        k = config.sr.factor
        ensure_divisible(config.view.frames, k, "config.view.frames / config.sr.factor")
        ensure_divisible(self.train_frames, k, "config.sr.crop_frames / config.sr.factor")

    def input_shape_for(self, output_shape: Shape) -> Shape:
        t, h, w, c = output_shape
        return (t // self.config.sr.factor, h, w, c)

    def upsample(self, cond):
        return temporal_upsample(cond, self.config.sr.factor, self.config.sr.upsample)

    def trivial_baselines(self, target):
        """Frame repetition and linear interpolation of every k-th frame; scored on the
        in-between frames only (every k-th frame is the input itself)."""
        k = self.config.sr.factor
        cond = views.temporal_subsample(target, k)
        baselines = {
            "frame_repetition": np.asarray(temporal_upsample(cond, k, "repeat")),
            "linear_interpolation": np.asarray(temporal_upsample(cond, k, "linear")),
        }
        return cond, baselines, np.arange(target.shape[1]) % k != 0

    def _pair(self, clips: Batch, rng: np.random.Generator, train: bool) -> Batch:
        target = views.clip_view(clips["video"], self.config.view, self.config.data, rng)
        if train:
            target = self.temporal_crop(target, rng)
        cond = views.temporal_subsample(target, self.config.sr.factor)
        return {"video": target, "cond": cond, "label": clips["label"].astype(np.int32)}


class SpatialSRStage(SuperResolutionStage):
    """Same frames, height and width x s. Fully convolutional: trains on crops, samples full size."""

    name = "spatial_sr"

    def __init__(self, config):
        super().__init__(config)
        check_choice(config.sr.upsample, ("bilinear",), "sr.upsample")
        s, res, crop = config.sr.factor, config.view.resolution, config.sr.crop
        ensure_divisible(res, s, "config.view.resolution / config.sr.factor")
        if crop:
            ensure_divisible(crop, s, "config.sr.crop / config.sr.factor")
            if crop > res:
                raise ConfigError(f"config.sr.crop={crop} exceeds config.view.resolution={res}.")

    def input_shape_for(self, output_shape: Shape) -> Shape:
        t, h, w, c = output_shape
        s = self.config.sr.factor
        return (t, h // s, w // s, c)

    @property
    def network_size(self) -> int:
        return self.config.sr.crop or self.config.view.resolution

    def upsample(self, cond):
        return spatial_upsample(cond, self.config.sr.factor)

    def trivial_baselines(self, target):
        """Bilinear upsampling of the box-downsampled clip; every frame scored."""
        cond = views.spatial_downsample(target, self.config.sr.factor)
        return cond, {"bilinear": np.asarray(self.upsample(cond))}, np.ones(target.shape[1], bool)

    def _pair(self, clips: Batch, rng: np.random.Generator, train: bool) -> Batch:
        s, crop = self.config.sr.factor, self.config.sr.crop if train else 0
        target = views.clip_view(clips["video"], self.config.view, self.config.data, rng)
        if train:
            target = self.temporal_crop(target, rng)
        if crop:
            # Crop on the low-res grid so target and conditioning stay aligned.
            cells = target.shape[2] // s
            y, x = rng.integers(0, cells - crop // s + 1, size=2) * s
            target = target[:, :, y : y + crop, x : x + crop]
        cond = views.spatial_downsample(target, s)
        return {"video": target, "cond": cond, "label": clips["label"].astype(np.int32)}


def build_super_resolution(config: ml_collections.ConfigDict) -> SuperResolutionStage:
    return TemporalSRStage(config) if config.stage == "temporal_sr" else SpatialSRStage(config)
