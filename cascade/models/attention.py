"""Attention layers and kernels of the video networks.

- U-Net (VDM): `SpatialAttention` over the H*W positions of each frame (frames as batch) and
  `TemporalAttention` over the T frames at each pixel, with a learned T5-style
  `RelativePositionBias` and `temporal_attention_mask` that keeps independent image frames of a
  joint image-video batch to themselves.
- DiT: `attention_einsum`, the explicit-matmul softmax attention (optionally masked: the
  block-causal DiT) used by `DiTConfig.attention_impl="einsum"` (the DiT block itself, with rotary embeddings and
  QK-norm, lives in `cascade.models.dit`).

The VAE's per-frame bottleneck attention stays with the other causal blocks
(`cascade.models.causal_blocks.FrameAttention`): it follows their streaming protocol.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from cascade.models.layers import Dense, GroupNorm, init_params, tagged_param


def attention_einsum(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Softmax attention on head-major q `[B, N, L, Hd]`, k/v `[B, N, S, Hd]` -> `[B, N, L, Hd]`.

    Same math as `jax.nn.dot_product_attention`; on CPU its gradient is ~3x faster because
    every matmul is a plain (B*N)-batched GEMM (the fused op's backward is not). `mask`: bool,
    broadcastable to `[B, N, L, S]`, True where the query may attend to the key.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    logits = jnp.matmul(q * jnp.asarray(scale, q.dtype), k.swapaxes(-1, -2))
    if mask is not None:  # the most negative finite value: a fully masked row stays finite
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.matmul(probs, v)


def relative_position_bucket(
    relative_position: jax.Array, num_buckets: int = 32, max_distance: int = 128
) -> jax.Array:
    """T5 bidirectional buckets of (key - query) positions: exact near 0, logarithmic far away."""
    num_buckets //= 2
    ret = (relative_position > 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(relative_position)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    val_large = max_exact + (
        jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).astype(jnp.int32)
    val_large = jnp.minimum(val_large, num_buckets - 1)
    return ret + jnp.where(is_small, n, val_large)


class RelativePositionBias(nnx.Module):
    """Learned per-head bias for temporal attention, a function of (key - query) frame offset."""

    def __init__(
        self,
        num_heads: int,
        *,
        rngs: nnx.Rngs | None,
        num_buckets: int = 32,
        max_distance: int = 128,
    ):
        self.embedding = tagged_param((num_buckets, num_heads), "normal", 0.02)
        self.num_buckets, self.max_distance = num_buckets, max_distance
        if rngs is not None:
            init_params(self, rngs)

    def __call__(self, frames: int) -> jax.Array:
        """Bias [1, heads, T, T] (query t, key s)."""
        pos = jnp.arange(frames)
        buckets = relative_position_bucket(
            pos[None, :] - pos[:, None], self.num_buckets, self.max_distance
        )
        return jnp.transpose(self.embedding[...][buckets], (2, 0, 1))[None]


def temporal_attention_mask(image_mask: jax.Array) -> jax.Array:
    """[B, T] image flags -> [B, 1, T, T] bool: video frames see video frames, images only self."""
    img = image_mask.astype(bool)
    frames = img.shape[1]
    video = ~img
    allowed = video[:, :, None] & video[:, None, :]
    allowed = allowed | jnp.eye(frames, dtype=bool)[None]
    return allowed[:, None]


class SpatialAttention(nnx.Module):
    """Residual self-attention over H*W positions of each frame (frames as batch)."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        groups: int,
        *,
        rngs: nnx.Rngs | None,
        dtype: str = "float32",
    ):
        if channels % num_heads:
            raise ValueError(f"attention: channels {channels} not divisible by heads {num_heads}")
        self.norm = GroupNorm(channels, groups, dtype=dtype)
        self.qkv = Dense(channels, 3 * channels, rngs=None, dtype=dtype)
        self.out = Dense(channels, channels, rngs=None, dtype=dtype, zero_init=True)
        self.num_heads = num_heads
        if rngs is not None:
            init_params(self, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        n = self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(b * t, h * w, 3, n, c // n)
        y = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return x + self.out(y.reshape(b, t, h, w, c)).astype(x.dtype)


class TemporalAttention(nnx.Module):
    """Residual self-attention over the T frames at each pixel, with relative position bias.

    `image_mask` [B, T] (True = independent image frame) restricts image frames to attend
    only to themselves and hides them from video frames.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        groups: int,
        *,
        rngs: nnx.Rngs | None,
        dtype: str = "float32",
    ):
        if channels % num_heads:
            raise ValueError(f"attention: channels {channels} not divisible by heads {num_heads}")
        self.norm = GroupNorm(channels, groups, dtype=dtype)
        self.qkv = Dense(channels, 3 * channels, rngs=None, dtype=dtype)
        self.out = Dense(channels, channels, rngs=None, dtype=dtype, zero_init=True)
        self.rel_bias = RelativePositionBias(num_heads, rngs=None)
        self.num_heads = num_heads
        if rngs is not None:
            init_params(self, rngs)

    def __call__(self, x: jax.Array, image_mask: jax.Array | None = None) -> jax.Array:
        b, t, h, w, c = x.shape
        n = self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(b, t, h * w, 3 * c)
        # Sequences along time: [B, HW, T, 3C] -> [B*HW, T, 3, heads, dh].
        qkv = jnp.swapaxes(qkv, 1, 2).reshape(b * h * w, t, 3, n, c // n)
        bias = self.rel_bias(t).astype(qkv.dtype)
        mask = None
        if image_mask is not None:
            m = temporal_attention_mask(image_mask)  # [B, 1, T, T]
            mask = jnp.broadcast_to(m[:, None], (b, h * w, 1, t, t)).reshape(b * h * w, 1, t, t)
        y = jax.nn.dot_product_attention(
            qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], bias=bias, mask=mask
        )
        y = jnp.swapaxes(y.reshape(b, h * w, t, c), 1, 2).reshape(b, t, h, w, c)
        return x + self.out(y).astype(x.dtype)
