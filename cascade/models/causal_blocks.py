"""Causal building blocks of the video VAE, and the chunked scan that carries their context.

Every block maps `[B, T, H, W, C]` to `[B, T', H', W', C']` looking only at the current and
earlier frames. A block called with a `ChunkContext` reads the previous chunk's last frames
from it and saves its own for the next chunk, so `run_chunked` over chunks of a clip equals
one pass over the whole clip (see `cascade.models.vae` for the layout of the network).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from cascade.models.ops import add_bias, conv2d_nhwc, rms_norm, upsample_nearest


class ChunkContext:
    """Context frames of every causal layer for one chunk, in call order.

    `frames=None` means the chunk starts at frame 0 (zero context). Each causal layer calls
    `context(default)` then `save(last_frames)` exactly once per call, so the i-th saved array
    is the i-th layer's cache for the next chunk.
    """

    def __init__(self, frames: Sequence[jax.Array] | None):
        self.start = frames is None
        self._frames = None if frames is None else list(frames)
        self.saved: list[jax.Array] = []

    def context(self, default: jax.Array) -> jax.Array:
        return default if self._frames is None else self._frames[len(self.saved)]

    def save(self, frames: jax.Array) -> None:
        self.saved.append(frames)


def scaled_normal_param(
    shape: tuple[int, ...], fan_in: int, rngs: nnx.Rngs, scale: float = 1.0
) -> nnx.Param:
    """A float32 Param drawn now from N(0, (scale / sqrt(fan_in))^2), one key per parameter."""
    std = scale / math.sqrt(fan_in)
    return nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32) * std)


class CausalConv3d(nnx.Module):
    """Conv over (t, h, w) with zero padding from the past only: `[B,T,H,W,Ci] -> [B,T,H,W,Co]`.

    The kernel is stored as `[kh, kw, kt*Ci, Co]` (time taps stacked on input channels, oldest
    first) so the conv runs as one 2D conv over the tap-concatenated frames. `stride=2` halves
    H and W (padding bottom/right only, as Wan's down-sampler).
    """

    def __init__(self, cin: int, cout: int, kernel=(3, 3, 3), stride=1, *, dtype, rngs):
        self.kt, self.kh, self.kw = kernel
        self.cin, self.cout, self.stride, self.dtype = cin, cout, stride, dtype
        fan_in = self.kt * self.kh * self.kw * cin
        self.kernel = scaled_normal_param((self.kh, self.kw, self.kt * cin, cout), fan_in, rngs)
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))

    def __call__(self, x: jax.Array, stream: ChunkContext | None = None) -> jax.Array:
        b, t, h, w, c = x.shape
        x = x.astype(self.dtype)
        if self.kt > 1:
            zeros = jnp.zeros((b, self.kt - 1, h, w, c), x.dtype)
            prev = zeros if stream is None else stream.context(zeros)
            xp = jnp.concatenate([prev.astype(x.dtype), x], axis=1)
            if stream is not None:
                stream.save(xp[:, t:])  # last kt-1 input frames (context for the next chunk)
            x = jnp.concatenate([xp[:, i : i + t] for i in range(self.kt)], axis=-1)
        kernel = self.kernel[...].astype(self.dtype)
        if self.kh == self.kw == self.stride == 1:
            y = x @ kernel[0, 0]
        else:
            s = self.stride
            pad = "SAME" if s == 1 else ((0, 1), (0, 1))
            y = conv2d_nhwc(x.reshape(b * t, h, w, -1), kernel, s, pad)
            y = y.reshape(b, t, h // s, w // s, self.cout)
        return add_bias(y, self.bias[...])

    def reference(self, x: jax.Array) -> jax.Array:
        """The same causal conv through `lax.conv_general_dilated` in 3D (for tests)."""
        k = self.kernel[...].reshape(self.kh, self.kw, self.kt, self.cin, self.cout)
        pad = ((self.kt - 1, 0), (self.kh // 2,) * 2, (self.kw // 2,) * 2)
        y = jax.lax.conv_general_dilated(
            x,
            k.transpose(2, 0, 1, 3, 4),
            (1, 1, 1),
            pad,
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        )
        return y + self.bias[...]


class RMSNorm(nnx.Module):
    """RMS norm over channels at each (t, h, w) position (causal: no cross-frame statistics)."""

    def __init__(self, channels: int):
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return rms_norm(x, self.scale[...], 1e-6)


class CausalResBlock(nnx.Module):
    """norm -> SiLU -> causal 3x3x3 conv, twice, plus a (1x1x1 when needed) shortcut.

    Not the U-Net's `layers.ResBlock`: this one pads time from the past only and streams
    chunks through `ChunkContext`, with per-position RMS norm (no cross-frame statistics) and
    no conditioning or dropout; its parameters are drawn per layer from N(0, 1/fan_in).
    """

    def __init__(self, cin: int, cout: int, *, dtype, rngs: nnx.Rngs):
        self.norm1, self.norm2 = RMSNorm(cin), RMSNorm(cout)
        self.conv1 = CausalConv3d(cin, cout, dtype=dtype, rngs=rngs)
        self.conv2 = CausalConv3d(cout, cout, dtype=dtype, rngs=rngs)
        self.skip = (
            CausalConv3d(cin, cout, (1, 1, 1), dtype=dtype, rngs=rngs) if cin != cout else None
        )

    def __call__(self, x: jax.Array, stream: ChunkContext | None = None) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x)), stream)
        h = self.conv2(nnx.silu(self.norm2(h)), stream)
        return h + (x.astype(h.dtype) if self.skip is None else self.skip(x))


class FrameAttention(nnx.Module):
    """Single-head self-attention over the H*W positions of each frame (per-frame: causal)."""

    def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs):
        self.norm = RMSNorm(channels)
        self.qkv = CausalConv3d(channels, 3 * channels, (1, 1, 1), dtype=dtype, rngs=rngs)
        self.proj = CausalConv3d(channels, channels, (1, 1, 1), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, stream: ChunkContext | None = None) -> jax.Array:
        b, t, h, w, c = x.shape
        q, k, v = jnp.split(self.qkv(self.norm(x)).reshape(b * t, h * w, 3 * c), 3, axis=-1)
        logits = (q @ k.swapaxes(-1, -2)).astype(jnp.float32) / math.sqrt(c)
        out = jax.nn.softmax(logits, axis=-1).astype(v.dtype) @ v
        return x + self.proj(out.reshape(b, t, h, w, c))


class CausalResample(nnx.Module):
    """2x spatial down/up-sampling, optionally with 2x causal time down/up-sampling.

    Down: 3x3 stride-2 conv (pad bottom/right) per frame, then time: out[0] = x[0],
    out[j] = W . concat(x[2j-2], x[2j-1], x[2j]) for j >= 1 (needs 1 + 2m frames per chunk
    starting at frame 0, 2m frames otherwise, with the previous chunk's last frame as context).
    Up: time first: a causal (3,1,1) conv to 2C channels, each frame j >= 1 becomes two frames
    (frame 0 passes through), then nearest 2x + 3x3 conv per frame.

    Not the U-Net's `unet3d.Resample` (space only, symmetric padding, no streaming); they
    share `ops.upsample_nearest`.
    """

    def __init__(self, channels: int, mode: str, time: bool, *, dtype, rngs: nnx.Rngs):
        self.mode, self.time, self.dtype, c = mode, time, dtype, channels
        stride = 2 if mode == "down" else 1
        self.spatial = CausalConv3d(c, c, (1, 3, 3), stride, dtype=dtype, rngs=rngs)
        if time and mode == "down":
            self.time_kernel = scaled_normal_param((3 * c, c), 3 * c, rngs)
            self.time_bias = nnx.Param(jnp.zeros((c,), jnp.float32))
        elif time:
            self.time_conv = CausalConv3d(c, 2 * c, (3, 1, 1), dtype=dtype, rngs=rngs)

    def _down_time(self, x: jax.Array, stream: ChunkContext | None) -> jax.Array:
        start = stream is None or stream.start
        if start:
            first = x[:, :1]
            windows_from = x
        else:
            first = None
            prev = stream.context(x[:, :1])
            windows_from = jnp.concatenate([prev.astype(x.dtype), x], axis=1)
        if stream is not None:
            stream.save(x[:, -1:])
        frames = windows_from.shape[1]
        if (frames - 1) % 2:
            raise ValueError(f"VAE time down-sampling got {x.shape[1]} frames in a chunk")
        m = (frames - 1) // 2
        if m == 0:
            return first
        taps = [windows_from[:, i : i + 2 * m : 2] for i in range(3)]  # frames 2j-2, 2j-1, 2j
        y = jnp.concatenate(taps, axis=-1) @ self.time_kernel[...].astype(x.dtype)
        y = y + self.time_bias[...].astype(x.dtype)
        return y if first is None else jnp.concatenate([first, y], axis=1)

    def _up_time(self, x: jax.Array, stream: ChunkContext | None) -> jax.Array:
        b, t, h, w, c = x.shape
        y = self.time_conv(x, stream).reshape(b, t, h, w, 2, c)
        y = y.transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * t, h, w, c)  # frame j -> 2j, 2j+1
        if stream is None or stream.start:
            y = jnp.concatenate([x[:, :1].astype(y.dtype), y[:, 2:]], axis=1)
        return y

    def __call__(self, x: jax.Array, stream: ChunkContext | None = None) -> jax.Array:
        if self.mode == "down":
            x = self.spatial(x)
            return self._down_time(x, stream) if self.time else x
        if self.time:
            x = self._up_time(x, stream)
        return self.spatial(upsample_nearest(x))


def run_chunked(fn, x: jax.Array, chunk: int, n_out: int) -> tuple[jax.Array, ...]:
    """Run `fn(chunk, stream) -> out(s)` over frame 0, then `chunk`-frame pieces, in a scan."""
    if chunk < 1:
        raise ValueError(f"latents_per_chunk must be >= 1, got {chunk}")

    def call(piece, frames):
        stream = ChunkContext(frames)
        out = fn(piece, stream)
        return (out if n_out > 1 else (out,)), stream.saved

    outs, cache = call(x[:, :1], None)  # frame 0 on its own, zero context
    pieces = [outs]
    n_full = (x.shape[1] - 1) // chunk
    if n_full:

        def step(carry, i):  # slice in the body: no stacked copy of the input
            piece = jax.lax.dynamic_slice_in_dim(x, 1 + i * chunk, chunk, axis=1)
            out, new = call(piece, carry)
            return new, out

        cache, ys = jax.lax.scan(step, cache, jnp.arange(n_full))  # n_out x [n_full, B, ...]
        pieces.append(tuple(y.swapaxes(0, 1).reshape(y.shape[1], -1, *y.shape[3:]) for y in ys))
    if x.shape[1] > 1 + n_full * chunk:  # a shorter last chunk
        pieces.append(call(x[:, 1 + n_full * chunk :], cache)[0])
    return tuple(jnp.concatenate([p[i] for p in pieces], axis=1) for i in range(n_out))
