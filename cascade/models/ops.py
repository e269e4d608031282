"""Stateless tensor ops shared by the U-Net, the latent DiT and the causal VAE.

One definition of each: the compute dtypes a config may name, the sinusoidal embedding of a
scalar per example, inverted dropout with an explicit key, RMS normalisation, a 2D NHWC
convolution, a bias added in float32 and nearest-neighbour 2x upsampling. Nothing here holds parameters.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

# Compute dtypes a model config may name; parameters always stay float32.
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")

_NHWC = ("NHWC", "HWIO", "NHWC")


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """y [..., C] + a float32 bias [C], added in float32 and returned in y's dtype.

    With bf16 compute the bias gradient is a sum over every position of the batch; summed in
    bf16 it lost 24-41% of the VAE decoder's bias gradients (tiny preset, against float32).
    Adding in float32 makes that sum float32. A no-op for float32 models.
    """
    return (y.astype(jnp.float32) + bias).astype(y.dtype)


def sinusoidal_embedding(
    x: jax.Array,
    dim: int,
    *,
    scale: float = 1000.0,
    max_period: float = 10000.0,
    cos_first: bool = False,
) -> jax.Array:
    """Sinusoidal features of a scalar per example: x [B] -> [B, dim].

    Frequencies f_i = max_period ** (-i / (dim/2)), i < dim/2, applied to `scale * x`. The
    two halves are sin then cos (`cos_first=False`: the U-Net, following VDM) or cos then sin
    (`cos_first=True`: the DiT, following DiT/ADM's `timestep_embedding`). The order is only
    a permutation of the features, but each model's trained weights and fixed-seed losses
    depend on it, so each keeps its own.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (scale * jnp.asarray(x, jnp.float32))[:, None] * freqs[None, :]
    first, second = (jnp.cos, jnp.sin) if cos_first else (jnp.sin, jnp.cos)
    return jnp.concatenate([first(args), second(args)], axis=-1)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout of x (any shape) with an explicit key; identity when rng is None or
    rate == 0. Kept values are scaled by 1 / (1 - rate), so the expectation is unchanged."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
    """RMS normalisation of x [..., C] over its last axis times `scale` [C].

    Statistics in float32 (stable in bfloat16 compute); the result has x's dtype.
    """
    xf = x.astype(jnp.float32)
    xf = xf * lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)
    return (xf * scale).astype(x.dtype)


def conv2d_nhwc(
    x: jax.Array, kernel: jax.Array, stride: int = 1, padding: Any = "SAME"
) -> jax.Array:
    """2D convolution of x [N, H, W, Cin] with kernel [kh, kw, Cin, Cout] -> [N, H', W', Cout].

    `padding` is "SAME", "VALID" or ((top, bottom), (left, right)); `stride` applies to H and W.
    """
    return lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=_NHWC)


def upsample_nearest(x: jax.Array) -> jax.Array:
    """[B, T, H, W, C] -> [B, T, 2H, 2W, C] by nearest-neighbour repetition."""
    b, t, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, :, None, :, None, :], (b, t, h, 2, w, 2, c))
    return x.reshape(b, t, 2 * h, 2 * w, c)
