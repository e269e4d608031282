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

Joint generation and the two-stage baselines live in the same network (`config.av.mode`),
with a flow time per modality (`AVDiT(..., t_audio=)`):
  joint               one t per clip for both modalities, loss on both; both sampled together.
  video_then_audio    per clip, with probability `config.av.clean_prob` the video is given
                      clean (t_video = 0) and only the audio is noised and scored (the second
                      stage: audio given the finished video); otherwise the audio is pure noise
                      (t_audio = 1, i.e. absent) and only the video is scored (the first stage:
                      video alone). Sampling runs the first stage (audio columns held at their
                      initial noise), then the second from the finished video, clean.
  audio_then_video    the same with the roles swapped.
We chose per-modality times in one network over two separate models because it keeps one
checkpoint, one trainer and the same parameters, sequence and batch in every mode: a training
step costs the same FLOPs in all three (only the loss mask differs), so equal steps and batch
are an equal training budget. A two-stage sample costs two passes of `sample.steps` network
evaluations, twice the joint sampler's.
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
AV_MODES = ("joint", "video_then_audio", "audio_then_video")


class AVDiTStage(Stage):
    """Flow matching on packed (pixels, log-mels) clips; see the module docstring."""

    name = "av_dit"
    fps = sound.FPS
    sample_rate = sound.SAMPLE_RATE

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        check_choice(config.sample.sampler, FLOW_SAMPLERS, "sample.sampler")
        check_choice(config.av.mode, AV_MODES, "av.mode")
        self.mode = config.av.mode
        self.clean_prob = float(config.av.clean_prob)
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
        video, track = self.clip_windows(clips, start)
        packed = self.pack(video, self.audio_features(track))
        return {"video": packed, "label": np.asarray(clips["label"], np.int32)}

    def clip_windows(self, clips: Batch, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """view.frames frames of each clip from start [B] at the view's resolution
        ([B, T, r, r, C] float32 in [-1, 1]) and the same window of its sound
        ([B, T * samples_per_frame] float32): the real counterpart of `to_video`/`to_audio`."""
        video, audio = np.asarray(clips["video"]), np.asarray(clips["audio"], np.float32)
        b, frames, spf = len(video), self.config.view.frames, sound.SAMPLES_PER_FRAME
        rows = np.arange(b)[:, None]
        idx = start[:, None] + np.arange(frames)[None]
        video = views.spatial_downsample(video[rows, idx], video.shape[2] // self.pixel_shape[1])
        samples = start[:, None] * spf + np.arange(frames * spf)[None]
        return video.astype(np.float32), audio[rows, samples]

    # -- network and objective -------------------------------------------------------------------
    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return AVDiT(self.model_config, self.audio_dim, rngs=rngs)

    @property
    def null_label(self) -> int:
        return self.model_config.num_classes

    def _labels(self, batch: Batch):
        return batch["label"].astype(jnp.int32) if self.model_config.num_classes > 0 else None

    def _velocity(self, model, z, t, video_label, audio_label, t_audio=None):
        video, audio = self.unpack(z)
        v, a = model(
            video, audio, t, video_label=video_label, audio_label=audio_label, t_audio=t_audio
        )
        return self.pack(v.astype(jnp.float32), a.astype(jnp.float32))

    @property
    def video_columns(self) -> np.ndarray:
        """float32 [P]: 1 on the packed row's pixel columns, 0 on its log-mel columns."""
        return (np.arange(self.video_dim + self.audio_dim) < self.video_dim).astype(np.float32)

    def modality_times(self, t: jax.Array, key: jax.Array):
        """Per-clip flow times (t_video, t_audio) [B] and loss weights (w_video, w_audio) [B]
        for `config.av.mode` (see the module docstring) from the drawn times t [B]."""
        ones = jnp.ones_like(t)
        if self.mode == "joint":
            return (t, t), (ones, ones)
        second = jax.random.bernoulli(key, self.clean_prob, t.shape).astype(t.dtype)
        t_first = (1.0 - second) * t  # 0 (clean) when training the second stage
        t_second = second * t + (1.0 - second)  # 1 (pure noise) when training the first
        w_first, w_second = 1.0 - second, second
        if self.mode == "video_then_audio":
            return (t_first, t_second), (w_first, w_second)
        return (t_second, t_first), (w_second, w_first)

    def loss(self, model, batch: Batch, key: jax.Array):
        """Flow matching with a time per modality (`modality_times`); each modality's label
        dropped to the null label independently (so either can be guided). The loss is the
        mean of the two modalities' velocity MSEs, each a mean over its own elements of the
        clips that score it (joint: every clip scores both)."""
        f = self.config.flow
        x0 = batch["video"]
        b = x0.shape[0]
        k_t, k_eps, k_v, k_a, k_m = jax.random.split(key, 5)
        t = flow.sample_t_logit_normal(k_t, (b,), f.logit_mean, f.logit_std, f.shift)
        (t_video, t_audio), (w_video, w_audio) = self.modality_times(t, k_m)
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        label_v = label_a = self._labels(batch)
        if label_v is not None and f.label_dropout > 0:
            label_v = guidance.drop_labels(label_v, f.label_dropout, k_v, self.null_label)
            label_a = guidance.drop_labels(label_a, f.label_dropout, k_a, self.null_label)
        cols = self.video_columns
        t_col = t_video[:, None] * cols + t_audio[:, None] * (1.0 - cols)  # [B, P]
        z = flow.flow_interpolate(x0, eps=eps, t=t_col.reshape(b, 1, 1, 1, -1))
        v = self._velocity(model, z, t_video, label_v, label_a, t_audio)
        err = jnp.square(v - flow.flow_target(x0, eps)).reshape(b, x0.shape[1], -1)
        per_video = jnp.mean(err[..., : self.video_dim], axis=(1, 2))
        per_audio = jnp.mean(err[..., self.video_dim :], axis=(1, 2))
        loss_video = jnp.sum(w_video * per_video) / jnp.maximum(jnp.sum(w_video), 1.0)
        loss_audio = jnp.sum(w_audio * per_audio) / jnp.maximum(jnp.sum(w_audio), 1.0)
        loss = 0.5 * (loss_video + loss_audio)
        return loss, {"loss": loss, "loss_video": loss_video, "loss_audio": loss_audio}

    def velocity_fn(self, model, cond: Batch):
        """v(z, t, t_audio=None) for sampling (the audio at t_audio when given), with
        classifier-free guidance per modality: the video rows get (1 + w_v) v(y, y) - w_v
        v(null, y), the audio rows (1 + w_a) v(y, y) - w_a v(y, null) (video label first), so
        guiding one modality leaves the other's condition in place."""
        label = self._labels(cond)
        s = self.config.sample

        def velocity(z, t, t_audio=None):
            v = self._velocity(model, z, t, label, label, t_audio)
            if label is None or (s.video_guidance == 0 and s.audio_guidance == 0):
                return v
            null = jnp.full_like(label, self.null_label)
            video, audio = self.unpack(v)
            if s.video_guidance > 0:
                un = self.unpack(self._velocity(model, z, t, null, label, t_audio))[0]
                video = guidance.cfg_combine(video, un, s.video_guidance)
            if s.audio_guidance > 0:
                un = self.unpack(self._velocity(model, z, t, label, null, t_audio))[1]
                audio = guidance.cfg_combine(audio, un, s.audio_guidance)
            return self.pack(video, audio)

        return velocity

    def sample(self, model, key: jax.Array, cond: Batch, *, steps: int | None = None) -> jax.Array:
        """Packed outputs [B, *output_shape] (`to_video`, `to_audio` unpack them). Joint: one
        pass over both modalities. Two-stage: the first modality with the second held at its
        initial noise (t = 1), then the second given the finished first one (t = 0), each
        pass `steps` network evaluations."""
        s = self.config.sample
        solver = flow.euler_sample if s.sampler == "euler" else flow.heun_sample
        shape = (cond["label"].shape[0], *self.output_shape)
        n = steps or s.steps
        velocity = self.velocity_fn(model, cond)
        if self.mode == "joint":
            return solver(velocity, shape, key, n, s.shift)
        video_first = self.mode == "video_then_audio"
        # Velocity zeroed on the columns a pass does not generate: they stay where they are.
        first = jnp.asarray(self.video_columns if video_first else 1.0 - self.video_columns)

        def times(t_first, t_second):  # -> (t_video, t_audio)
            return (t_first, t_second) if video_first else (t_second, t_first)

        def first_pass(z, t):
            return velocity(z, *times(t, jnp.ones_like(t))) * first

        def second_pass(z, t):
            return velocity(z, *times(jnp.zeros_like(t), t)) * (1.0 - first)

        z = solver(first_pass, shape, key, n, s.shift)
        return solver(second_pass, shape, key, n, s.shift, z_init=z)
