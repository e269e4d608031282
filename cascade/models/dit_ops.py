"""Position and modulation ops of the latent DiT (`cascade.models.dit`).

- 3D rotary embeddings: `rope_tables` (numpy constants for a fixed token grid) and
  `rope_tables_at` (jnp, for a grid whose time coordinate is shifted by a traced offset: the
  chunks of a KV-cached rollout), applied by `apply_rope`.
- adaLN: `modulate` / `gated_add` take per-sample `[B, D]` modulation, or per-frame
  `[B, G, D]` modulation (G groups of equal-size consecutive token rows: the latent frames
  of a per-frame noise level, Diffusion Forcing).
- `block_causal_mask`: which token may attend to which when attention is causal over
  chunks of latent frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def rope_tables(
    positions: np.ndarray, axes_dim: Sequence[int], theta: float = 10000.0
) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables `[L, head_dim]` (numpy, so they compile to constants) for positions `[L, 3]`.

    Pair i of the head dim is (i, i + head_dim/2) ("rotate-half" layout); the first axes_dim[0]/2
    pairs rotate with the t coordinate, the next axes_dim[1]/2 with h, the last with w.
    """
    positions = np.asarray(positions, np.float64)
    angles = []
    for axis, dim in enumerate(axes_dim):
        if dim == 0:
            continue
        freqs = theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)  # [dim/2]
        angles.append(positions[:, axis : axis + 1] * freqs[None])
    angle = np.concatenate(angles, axis=-1)  # [L, head_dim/2]
    angle = np.concatenate([angle, angle], axis=-1)
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


def rope_tables_at(
    positions: np.ndarray,
    t_offset: jax.Array,
    axes_dim: Sequence[int],
    theta: float = 10000.0,
) -> tuple[jax.Array, jax.Array]:
    """`rope_tables` of `positions + (t_offset, 0, 0)`, computed in jnp (t_offset may be traced),
    so one compiled rollout step serves every chunk of a video. Returns cos/sin `[L, head_dim]`."""
    positions = jnp.asarray(positions, jnp.float32)
    positions = positions.at[:, 0].add(jnp.asarray(t_offset, jnp.float32))
    angles = []
    for axis, dim in enumerate(axes_dim):
        if dim == 0:
            continue
        freqs = np.asarray(theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim), np.float32)
        angles.append(positions[:, axis : axis + 1] * freqs[None])
    angle = jnp.concatenate(angles, axis=-1)
    angle = jnp.concatenate([angle, angle], axis=-1)
    return jnp.cos(angle), jnp.sin(angle)


def grid_positions(t: int, h: int, w: int) -> np.ndarray:
    """Integer (t, h, w) coordinates of a token grid in row-major order, `[t*h*w, 3]`."""
    tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([tt, hh, ww], axis=-1).reshape(-1, 3).astype(np.float32)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, seq_axis: int) -> jax.Array:
    """Rotate x `[B, L, N, Hd]` (seq_axis=1) or `[B, N, L, Hd]` (seq_axis=2); cos/sin `[L, Hd]`."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    if seq_axis == 1:
        cos, sin = cos[:, None, :], sin[:, None, :]
    return x * cos.astype(x.dtype) + rotated * sin.astype(x.dtype)


def block_causal_mask(frames: int, tokens_per_frame: int, frames_per_chunk: int) -> np.ndarray:
    """Bool `[L, L]` (query, key), L = frames * tokens_per_frame in (t, h, w) row-major order:
    True where the key's chunk (frame // frames_per_chunk) is the query's chunk or an earlier one.
    """
    chunk = np.repeat(np.arange(frames) // frames_per_chunk, tokens_per_frame)
    return chunk[:, None] >= chunk[None, :]


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """LayerNorm without affine (the affine comes from adaLN), statistics in float32."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN: LayerNorm(x) * (1 + scale) + shift. x `[B*L, D]`; shift/scale `[B, D]` (per
    sample) or `[B, G, D]` (per group of L/G consecutive tokens: per latent frame)."""
    if shift.ndim == 2:
        b, d = shift.shape
        y = layer_norm(x).reshape(b, -1, d) * (1.0 + scale[:, None, :]) + shift[:, None, :]
        return y.reshape(x.shape)
    b, g, d = shift.shape
    y = layer_norm(x).reshape(b, g, -1, d) * (1.0 + scale[:, :, None]) + shift[:, :, None]
    return y.reshape(x.shape)


def gated_add(x: jax.Array, h: jax.Array, gate: jax.Array) -> jax.Array:
    """Residual x + gate * h. x, h `[B*L, D]`; gate `[B, D]` or `[B, G, D]` (as `modulate`)."""
    if gate.ndim == 2:
        b, d = gate.shape
        return (x.reshape(b, -1, d) + gate[:, None, :] * h.reshape(b, -1, d)).reshape(x.shape)
    b, g, d = gate.shape
    y = x.reshape(b, g, -1, d) + gate[:, :, None] * h.reshape(b, g, -1, d)
    return y.reshape(x.shape)
