"""Joint audio-video stage: one flow-matching DiT generates small clips and their sound.

Video side: pixel-space patches of the clip view (no VAE: the clips are small, 16-32 px,
and the VAE's 4x temporal compression would break the one-audio-token-per-frame
alignment). Audio side: the fixed log-mel front end (`cascade.models.audio_frontend`),
16 mel frames x 64 mels per video frame, normalised by the fixed affine `config.audio`
(center, scale), decoded back to a waveform with Griffin-Lim.

Both travel as one packed array so the trainer, the sampler and checkpoints treat this
stage like any other: `[B, T, 1, 1, H*W*C + A]`, each frame's row holding its pixels in
[-1, 1] then its normalised log-mel slice (A = 1024). `to_video` and `to_audio` unpack
(`to_audio`: `[B, T * samples_per_frame]` float32 in [-1, 1], sample-aligned with frame 0).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from cascade.configs import ConfigError, build_dataclass, check_choice, ensure_divisible
from cascade.data import views
from cascade.data.builders import bouncing_shapes_sound as sound
from cascade.diffusion import flow, guidance
from cascade.models import audio_frontend
from cascade.models.av_dit import AVDiT
from cascade.models.dit import DiTConfig
from cascade.stages.stage import Batch, Shape, ShapeMismatchError, Stage

FLOW_SAMPLERS = ("euler", "heun")


class AVDiTStage(Stage):
    """Flow matching on packed (pixels, log-mels) clips; see the module docstring."""

    name = "av_dit"
    fps = sound.FPS
    sample_rate = sound.SAMPLE_RATE

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        check_choice(config.sample.sampler, FLOW_SAMPLERS, "sample.sampler")
        self.model_config: DiTConfig = build_dataclass(DiTConfig, config.model, "model")
        if config.view.frame_stride != 1:  # also refused by config_checks, before any build
            raise ConfigError(
                f"config.view.frame_stride={config.view.frame_stride}: av_dit keeps every frame "
                "(the sound of skipped frames would have no frame); set it to 1."
            )
        self.mel = audio_frontend.MelConfig(sample_rate=sound.SAMPLE_RATE)
        if sound.SAMPLES_PER_FRAME % self.mel.hop:
            raise ConfigError("audio hop must divide the samples per frame")  # fixed constants
        self.mel_per_frame = sound.SAMPLES_PER_FRAME // self.mel.hop
        self.audio_dim = self.mel_per_frame * self.mel.n_mels
        t, r, _, c = self.pixel_shape
        if c != self.model_config.in_channels:
            raise ConfigError(
                f"config.model.in_channels={self.model_config.in_channels} but the clips have "
                f"config.view.channels={c}."
            )
        _, ph, pw = self.model_config.patch_size
        if r % ph or r % pw:
            raise ConfigError(
                f"config.view.resolution={r} does not tile into patches {(ph, pw)} "
                "(config.model.patch_size)."
            )
        self.video_dim = r * r * c
        self.griffin_lim_iters = int(config.audio.griffin_lim_iters)  # read once: to_audio's

    # -- shapes and unpacking ------------------------------------------------------------------
    @property
    def pixel_shape(self) -> Shape:
        v = self.config.view
        return (v.frames, v.resolution, v.resolution, v.channels)

    @property
    def output_shape(self) -> Shape:
        return (self.config.view.frames, 1, 1, self.video_dim + self.audio_dim)

    def unpack(self, packed: Any) -> tuple[Any, Any]:
        """Packed [B, T, 1, 1, P] -> video [B, T, H, W, C], normalised log-mels [B, T, A]
        (numpy or jnp, as given)."""
        b, t = packed.shape[:2]
        flat = packed.reshape(b, t, -1)
        video = flat[..., : self.video_dim].reshape(b, *self.pixel_shape)
        return video, flat[..., self.video_dim :]

    def pack(self, video: Any, audio: Any) -> Any:
        """Inverse of `unpack`: video [B, T, H, W, C], log-mels [B, T, A] -> [B, T, 1, 1, P]."""
        b, t = video.shape[:2]
        xp = jnp if isinstance(video, jax.Array) else np
        return xp.concatenate([video.reshape(b, t, -1), audio], axis=-1).reshape(
            b, *self.output_shape
        )

    def to_video(self, outputs: np.ndarray) -> np.ndarray:
        """Generated clips [B, T, H, W, C] in [-1, 1] from packed outputs."""
        return np.clip(self.unpack(np.asarray(outputs))[0], -1.0, 1.0)

    def to_audio(self, outputs: np.ndarray) -> np.ndarray:
        """Generated sound [B, T * samples_per_frame] float32 in [-1, 1] from packed outputs:
        de-normalised log-mels through `audio_frontend.decode` (Griffin-Lim)."""
        a = self.config.audio
        mels = self.unpack(np.asarray(outputs, np.float64))[1] * a.scale + a.center
        b, t = mels.shape[:2]
        mels = mels.reshape(b, t * self.mel_per_frame, self.mel.n_mels)
        wave = audio_frontend.decode(
            mels, t * sound.SAMPLES_PER_FRAME, self.mel, iters=self.griffin_lim_iters
        )
        return np.clip(wave, -1.0, 1.0).astype(np.float32)

    def audio_features(self, audio: np.ndarray) -> np.ndarray:
        """Normalised log-mels [B, T, A] of tracks [B, T * samples_per_frame] in [-1, 1]."""
        a = self.config.audio
        b, s = audio.shape
        t = s // sound.SAMPLES_PER_FRAME
        mels = (audio_frontend.encode(audio, self.mel) - a.center) / a.scale
        return mels.reshape(b, t, self.audio_dim).astype(np.float32)

    # -- data -----------------------------------------------------------------------------------
    def make_batch(self, clips: Batch, rng: np.random.Generator) -> Batch:
        """A random window of view.frames frames per clip, with the same window of its sound."""
        if "audio" not in clips:
            raise ConfigError(
                "the av_dit stage needs clips with sound: config.data.name='bouncing_shapes' "
                "with config.data.sound=True."
            )
        video, audio = np.asarray(clips["video"]), np.asarray(clips["audio"], np.float32)
        b, stored, res = video.shape[:3]
        spf = sound.SAMPLES_PER_FRAME
        if audio.shape != (b, stored * spf):
            raise ShapeMismatchError(
                f"av_dit: audio {audio.shape} is not {stored} frames x {spf} samples per clip."
            )
        frames = self.config.view.frames
        if frames > stored:
            raise ConfigError(
                f"config.view.frames={frames} but stored clips have {stored} (config.data.frames)."
            )
        ensure_divisible(res, self.config.view.resolution, "config.data.resolution")
        start = rng.integers(0, stored - frames + 1, size=b)
        idx = start[:, None] + np.arange(frames)[None]
        video = views.spatial_downsample(
            video[np.arange(b)[:, None], idx], res // self.pixel_shape[1]
        )
        samples = start[:, None] * spf + np.arange(frames * spf)[None]
        mels = self.audio_features(audio[np.arange(b)[:, None], samples])
        packed = self.pack(video.astype(np.float32), mels)
        return {"video": packed, "label": np.asarray(clips["label"], np.int32)}

    # -- network and objective -------------------------------------------------------------------
    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return AVDiT(self.model_config, self.audio_dim, rngs=rngs)

    @property
    def null_label(self) -> int:
        return self.model_config.num_classes

    def _labels(self, batch: Batch):
        return batch["label"].astype(jnp.int32) if self.model_config.num_classes > 0 else None

    def _velocity(self, model, z, t, video_label, audio_label):
        video, audio = self.unpack(z)
        v, a = model(video, audio, t, video_label=video_label, audio_label=audio_label)
        return self.pack(v.astype(jnp.float32), a.astype(jnp.float32))

    def loss(self, model, batch: Batch, key: jax.Array):
        """Flow matching at one t per clip for both modalities; each modality's label dropped
        to the null label independently (so either can be guided). The loss is the mean of
        the two modalities' velocity MSEs (each a mean over its own elements)."""
        f = self.config.flow
        x0 = batch["video"]
        k_t, k_eps, k_v, k_a = jax.random.split(key, 4)
        t = flow.sample_t_logit_normal(k_t, (x0.shape[0],), f.logit_mean, f.logit_std, f.shift)
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        label_v = label_a = self._labels(batch)
        if label_v is not None and f.label_dropout > 0:
            label_v = guidance.drop_labels(label_v, f.label_dropout, k_v, self.null_label)
            label_a = guidance.drop_labels(label_a, f.label_dropout, k_a, self.null_label)
        v = self._velocity(model, flow.flow_interpolate(x0, eps=eps, t=t), t, label_v, label_a)
        err = jnp.square(v - flow.flow_target(x0, eps)).reshape(*x0.shape[:2], -1)
        loss_video = jnp.mean(err[..., : self.video_dim])
        loss_audio = jnp.mean(err[..., self.video_dim :])
        loss = 0.5 * (loss_video + loss_audio)
        return loss, {"loss": loss, "loss_video": loss_video, "loss_audio": loss_audio}

    def velocity_fn(self, model, cond: Batch):
        """v(z, t) for sampling, with classifier-free guidance per modality: the video rows
        get (1 + w_v) v(y, y) - w_v v(null, y), the audio rows (1 + w_a) v(y, y) - w_a v(y, null)
        (video label first), so guiding one modality leaves the other's condition in place."""
        label = self._labels(cond)
        s = self.config.sample

        def velocity(z, t):
            v = self._velocity(model, z, t, label, label)
            if label is None or (s.video_guidance == 0 and s.audio_guidance == 0):
                return v
            null = jnp.full_like(label, self.null_label)
            video, audio = self.unpack(v)
            if s.video_guidance > 0:
                un = self.unpack(self._velocity(model, z, t, null, label))[0]
                video = guidance.cfg_combine(video, un, s.video_guidance)
            if s.audio_guidance > 0:
                un = self.unpack(self._velocity(model, z, t, label, null))[1]
                audio = guidance.cfg_combine(audio, un, s.audio_guidance)
            return self.pack(video, audio)

        return velocity

    def sample(self, model, key: jax.Array, cond: Batch, *, steps: int | None = None) -> jax.Array:
        """Packed outputs [B, *output_shape] (`to_video`, `to_audio` unpack them)."""
        s = self.config.sample
        solver = flow.euler_sample if s.sampler == "euler" else flow.heun_sample
        shape = (cond["label"].shape[0], *self.output_shape)
        return solver(self.velocity_fn(model, cond), shape, key, steps or s.steps, s.shift)
