"""Joint audio-video DiT: one transformer over video patches and audio tokens (one flow).

Shapes: video `[B, T, H, W, C]` -> patches of `(1, ph, pw)` (`Lv = T * H/ph * W/pw` tokens);
audio `[B, T, A]`, one token per video frame (A = that frame's log-mel slice flattened,
16 mel frames x 64 mels = 1024 by default) -> `T` tokens; both projected to `D = hidden_size`
and concatenated (video rows first, then audio rows) into one sequence of `L = Lv + T` tokens
that `depth` blocks of full self-attention + MLP (`cascade.models.dit.DiTBlock`) denoise
together; separate output linears return the velocity of each modality.

- Position: the DiT's 3D rotary embeddings with a shared time axis: audio token t has
  coordinate (t, (gh - 1) / 2, (gw - 1) / 2), the same time as the patches of video frame t
  and the centre of the frame's grid in space (no patch is privileged), so attention between
  a frame and its sound depends on their time offset only (`av_positions`).
- Conditioning: adaLN-zero on c = emb(1000 t) + label embedding, one c per modality (video
  and audio rows are modulated by their own c). The flow time is shared by both modalities
  (joint generation) unless `t_audio` is given: then video rows see t and audio rows t_audio,
  which is what the two-stage baselines of `cascade.stages.av_dit` train and sample with
  (t = 0: that modality is given clean; t = 1: it is pure noise, i.e. absent). Each modality's
  label can be the null label independently, so classifier-free guidance can be applied to
  either.
- Like `LatentDiT`, the gates, modulation and output layers start at zero: the network
  outputs exactly zero at initialisation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cascade.models.dit import DiTBlock, DiTConfig, grid_positions, rope_tables
from cascade.models.dit_ops import modulate
from cascade.models.ops import sinusoidal_embedding

_xavier = nnx.initializers.xavier_uniform()


def _zero_linear(din: int, dout: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    zeros = nnx.initializers.zeros_init()
    return nnx.Linear(din, dout, dtype=dtype, kernel_init=zeros, bias_init=zeros, rngs=rngs)


def av_positions(frames: int, gh: int, gw: int) -> np.ndarray:
    """Rotary coordinates `[T*gh*gw + T, 3]` of the joint sequence: the (t, h, w) grid of the
    video patches (row-major), then one row (t, (gh-1)/2, (gw-1)/2) per audio token t."""
    video = grid_positions(frames, gh, gw)
    audio = np.stack(
        [np.arange(frames), np.full(frames, (gh - 1) / 2), np.full(frames, (gw - 1) / 2)], -1
    )
    return np.concatenate([video, audio.astype(np.float32)], axis=0)


class AVDiT(nnx.Module):
    """Velocity network: `__call__(video [B,T,H,W,C], audio [B,T,A], t [B])` -> both velocities."""

    def __init__(self, cfg: DiTConfig, audio_dim: int, *, rngs: nnx.Rngs):
        if cfg.patch_size[0] != 1:
            raise ValueError(
                f"AVDiT needs patch_size[0] == 1 (one audio token per video frame), got "
                f"{cfg.patch_size}"
            )
        if cfg.causal_chunk:
            raise ValueError("AVDiT attends over the whole clip: causal_chunk must be 0")
        self.cfg, self.audio_dim = cfg, audio_dim
        d, dtype = cfg.hidden_size, jnp.dtype(cfg.dtype)
        self.patch_dim = cfg.patch_size[1] * cfg.patch_size[2] * cfg.in_channels
        self.video_embed = nnx.Linear(
            self.patch_dim, d, dtype=dtype, kernel_init=_xavier, rngs=rngs
        )
        self.audio_embed = nnx.Linear(audio_dim, d, dtype=dtype, kernel_init=_xavier, rngs=rngs)
        init02 = nnx.initializers.normal(0.02)
        self.t_fc1 = nnx.Linear(cfg.time_embed_dim, d, dtype=dtype, kernel_init=init02, rngs=rngs)
        self.t_fc2 = nnx.Linear(d, d, dtype=dtype, kernel_init=init02, rngs=rngs)
        if cfg.num_classes > 0:  # one table per modality: each has its own null label
            n = cfg.num_classes + 1
            self.video_label = nnx.Embed(n, d, dtype=dtype, embedding_init=init02, rngs=rngs)
            self.audio_label = nnx.Embed(n, d, dtype=dtype, embedding_init=init02, rngs=rngs)
        if cfg.shared_adaln:
            self.ada = _zero_linear(d, 6 * d, dtype, rngs)
        self.blocks = nnx.List([DiTBlock(cfg, rngs=rngs) for _ in range(cfg.depth)])
        self.final_ada = _zero_linear(d, 2 * d, dtype, rngs)
        self.video_out = _zero_linear(d, self.patch_dim, dtype, rngs)
        self.audio_out = _zero_linear(d, audio_dim, dtype, rngs)

    def condition(
        self,
        t: jax.Array,
        video_label: jax.Array | None,
        audio_label: jax.Array | None,
        t_audio: jax.Array | None = None,
    ) -> jax.Array:
        """Per-modality conditioning `[B, 2, D]` (video, audio) from flow times t `[B]` (the
        audio's is `t_audio` `[B]` when given, else t) and labels `[B]` (None: the null label)."""
        cfg = self.cfg
        times = jnp.stack([t, t if t_audio is None else t_audio], axis=1)  # [B, 2]
        emb = sinusoidal_embedding(
            times.reshape(-1), cfg.time_embed_dim, scale=1000.0, cos_first=True
        )
        c = self.t_fc2(nnx.silu(self.t_fc1(emb.astype(jnp.dtype(cfg.dtype)))))
        c = c.reshape(*times.shape, -1)
        if cfg.num_classes == 0:
            if video_label is not None or audio_label is not None:
                raise ValueError("AVDiT: got a label but DiTConfig.num_classes == 0")
            return c
        null = jnp.full(t.shape, cfg.num_classes, jnp.int32)
        yv = self.video_label(null if video_label is None else jnp.asarray(video_label, jnp.int32))
        ya = self.audio_label(null if audio_label is None else jnp.asarray(audio_label, jnp.int32))
        return c + jnp.stack([yv, ya], axis=1)

    def __call__(
        self,
        video: jax.Array,
        audio: jax.Array,
        t: jax.Array,
        *,
        video_label: jax.Array | None = None,
        audio_label: jax.Array | None = None,
        t_audio: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Velocities (`[B, T, H, W, C]`, `[B, T, A]`) of video `[B, T, H, W, C]` and audio
        `[B, T, A]` at flow time t (scalar or `[B]`); the audio at `t_audio` (scalar or `[B]`)
        when given, else at the same t."""
        cfg = self.cfg
        b, frames, hh, ww, ch = video.shape
        _, ph, pw = cfg.patch_size
        if ch != cfg.in_channels or hh % ph or ww % pw:
            raise ValueError(
                f"AVDiT: video {video.shape} must be [B, T, H, W, {cfg.in_channels}] with H, W "
                f"divisible by the patch {cfg.patch_size[1:]}"
            )
        if audio.shape != (b, frames, self.audio_dim):
            raise ValueError(
                f"AVDiT: audio must be [B, T, A] = {(b, frames, self.audio_dim)}, got {audio.shape}"
            )
        gh, gw = hh // ph, ww // pw
        lv = frames * gh * gw
        dtype = jnp.dtype(cfg.dtype)
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
        if t_audio is not None:
            t_audio = jnp.broadcast_to(jnp.asarray(t_audio, jnp.float32), (b,))
        patches = video.astype(dtype).reshape(b, frames, gh, ph, gw, pw, ch)
        patches = patches.transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, lv, self.patch_dim)
        tokens = jnp.concatenate(
            [self.video_embed(patches), self.audio_embed(audio.astype(dtype))], axis=1
        )
        seq = lv + frames
        h = tokens.reshape(b * seq, -1)
        cos, sin = rope_tables(av_positions(frames, gh, gw), cfg.axes_dim, cfg.rope_theta)
        c = self.condition(t, video_label, audio_label, t_audio)  # [B, 2, D]
        rows = np.repeat([0, 1], [lv, frames])  # which modality's c modulates each token row

        # Per-token modulation [B, L, ...]: modulate / gated_add treat it as L groups of one row.
        if cfg.shared_adaln:
            mod = self.ada(nnx.silu(c)).reshape(b, 2, 6, -1)[:, rows]
        else:
            mod = c[:, rows]
        for block in self.blocks:
            h = block(h, mod, cos, sin)
        shift, scale = jnp.split(self.final_ada(nnx.silu(c))[:, rows], 2, axis=-1)
        out = modulate(h, shift, scale).reshape(b, seq, -1)
        v = self.video_out(out[:, :lv]).reshape(b, frames, gh, gw, ph, pw, ch)
        v = v.transpose(0, 1, 2, 4, 3, 5, 6).reshape(video.shape)
        a = self.audio_out(out[:, lv:])
        return v.astype(video.dtype), a.astype(audio.dtype)
