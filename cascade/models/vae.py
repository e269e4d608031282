"""Causal video VAE: `[B, 1+tf*k, H, W, C]` clips <-> `[B, 1+k, H/sf, W/sf, Cz]` latents.

Causality. Every layer only looks at the current and earlier frames:
- `CausalConv3d` pads time with `kt-1` *zero* frames in front (no future frames, no replicate):
  zero padding is what a chunk with an all-zero context cache sees, so the first chunk and a
  one-pass call take exactly the same code path. Spatial padding is ordinary SAME zero padding.
- Norms are per position (RMS over channels) and the bottleneck attention is per frame.
- Time resampling keeps frame 0 on its own (Wan / MAGVIT-v2 style): the down-sampler passes
  frame 0 through and merges frames (2j-2, 2j-1, 2j) into output j (kernel 3, stride 2); the
  up-sampler passes frame 0 through and expands every later frame into 2. So 1 + tf*k frames
  become 1 + k latents, frame 0 is encoded like an image, and an image is a 1-frame clip.

Speed (2-core CPU): a causal 3x3x3 conv is computed as the concatenation of its kt time taps
on the channel axis followed by one 2D conv over all frames (~3-5x faster than XLA's conv3d
here, identical math; `CausalConv3d.reference` is the lax conv3d it must equal).

Chunked encode/decode (`encode_chunked`, `decode_chunked`): clips are processed as chunks of
1, tf*n, tf*n, ... frames (n = latents_per_chunk) inside a `lax.scan`; each causal layer keeps
the last frames of its input from the previous chunk (kt-1 frames for a conv, 1 for the time
down-sampler) in a cache carried through the scan, so the result equals one pass and the
activation memory does not grow with clip length.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Causal video VAE hyper-parameters (`CausalVideoVAE(VAEConfig(**config.model), ...)`)."""

    in_channels: int = 3
    latent_channels: int = 4
    base_channels: int = 32
    channel_mults: Sequence[int] = (1, 2, 4, 4)  # one per resolution; len = log2(spatial) + 1
    num_res_blocks: int = 1  # per resolution, encoder and decoder
    spatial_downsample: int = 8
    temporal_downsample: int = 4  # 1, 2 or 4; applied at the lowest-resolution resamplers
    mid_attention: bool = True  # per-frame self-attention at the bottleneck
    dtype: str = "float32"  # compute dtype; parameters stay float32
    remat: bool = False  # activation checkpointing per residual block (one-pass calls)

    def __post_init__(self):
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        sf, tf = self.spatial_downsample, self.temporal_downsample
        if sf < 1 or sf & (sf - 1):
            raise ValueError(f"VAEConfig.spatial_downsample must be a power of 2, got {sf}")
        if tf not in (1, 2, 4):
            raise ValueError(f"VAEConfig.temporal_downsample must be one of (1, 2, 4), got {tf}")
        if len(self.channel_mults) != self.num_resamples + 1:
            raise ValueError(
                f"VAEConfig.channel_mults needs log2(spatial_downsample) + 1 = "
                f"{self.num_resamples + 1} entries, got {self.channel_mults}"
            )
        if self.num_time_resamples > self.num_resamples:
            raise ValueError(
                f"VAEConfig.temporal_downsample={tf} needs spatial_downsample >= {tf}, got {sf}"
            )
        if self.dtype not in _DTYPES:
            raise ValueError(f"VAEConfig.dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if min(self.in_channels, self.latent_channels, self.base_channels) < 1:
            raise ValueError("VAEConfig channel counts must be positive")

    @property
    def num_resamples(self) -> int:
        return int(math.log2(self.spatial_downsample))

    @property
    def num_time_resamples(self) -> int:
        return int(math.log2(self.temporal_downsample))

    def latent_frames(self, frames: int) -> int:
        """Latent frames for a clip of `frames` (validated: 1 + tf*k)."""
        check_frames(frames, self.temporal_downsample)
        return 1 + (frames - 1) // self.temporal_downsample

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """`(T_latent, h, w, Cz)` for a clip of `frames x height x width`."""
        sf = self.spatial_downsample
        if height % sf or width % sf:
            raise ValueError(
                f"VAE: frame size {height}x{width} is not divisible by spatial_downsample={sf}"
            )
        return (self.latent_frames(frames), height // sf, width // sf, self.latent_channels)


def check_frames(frames: int, temporal_downsample: int) -> None:
    """Raise a clear error unless frames = 1 + tf*k (k >= 0)."""
    tf = temporal_downsample
    if frames >= 1 and (frames - 1) % tf == 0:
        return
    below = 1 + max(0, (frames - 1) // tf) * tf
    above = below + tf if frames > below else below
    raise ValueError(
        f"VAE needs 1 + {tf}k frames (temporal_downsample={tf}), got {frames}; "
        f"nearest valid: {sorted({below, above})}"
    )


class _Stream:
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


def _conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: Any = "SAME") -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _init(shape: tuple[int, ...], fan_in: int, rngs: nnx.Rngs, scale: float = 1.0) -> nnx.Param:
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
        self.kernel = _init((self.kh, self.kw, self.kt * cin, cout), fan_in, rngs)
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))

    def __call__(self, x: jax.Array, stream: _Stream | None = None) -> jax.Array:
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
            y = _conv2d(x.reshape(b * t, h, w, -1), kernel, s, pad)
            y = y.reshape(b, t, h // s, w // s, self.cout)
        return y + self.bias[...].astype(self.dtype)

    def reference(self, x: jax.Array) -> jax.Array:
        """The same causal conv through `lax.conv_general_dilated` in 3D (for tests)."""
        k = self.kernel[...].reshape(self.kh, self.kw, self.kt, self.cin, self.cout)
        pad = ((self.kt - 1, 0), (self.kh // 2,) * 2, (self.kw // 2,) * 2)
        y = jax.lax.conv_general_dilated(
            x,
            k.transpose(2, 0, 1, 3, 4),
            (1, 1, 1),
            pad,
            dimension_numbers=("NDHWC",) * 0 or ("NDHWC", "DHWIO", "NDHWC"),
        )
        return y + self.bias[...]


class RMSNorm(nnx.Module):
    """RMS norm over channels at each (t, h, w) position (causal: no cross-frame statistics)."""

    def __init__(self, channels: int):
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + 1e-6)
        return (xf * self.scale[...]).astype(x.dtype)


class ResBlock(nnx.Module):
    """norm -> SiLU -> causal 3x3x3 conv, twice, plus a (1x1x1 when needed) shortcut."""

    def __init__(self, cin: int, cout: int, *, dtype, rngs: nnx.Rngs):
        self.norm1, self.norm2 = RMSNorm(cin), RMSNorm(cout)
        self.conv1 = CausalConv3d(cin, cout, dtype=dtype, rngs=rngs)
        self.conv2 = CausalConv3d(cout, cout, dtype=dtype, rngs=rngs)
        self.skip = (
            CausalConv3d(cin, cout, (1, 1, 1), dtype=dtype, rngs=rngs) if cin != cout else None
        )

    def __call__(self, x: jax.Array, stream: _Stream | None = None) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x)), stream)
        h = self.conv2(nnx.silu(self.norm2(h)), stream)
        return h + (x.astype(h.dtype) if self.skip is None else self.skip(x))


class FrameAttention(nnx.Module):
    """Single-head self-attention over the H*W positions of each frame (per-frame: causal)."""

    def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs):
        self.norm = RMSNorm(channels)
        self.qkv = CausalConv3d(channels, 3 * channels, (1, 1, 1), dtype=dtype, rngs=rngs)
        self.proj = CausalConv3d(channels, channels, (1, 1, 1), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, stream: _Stream | None = None) -> jax.Array:
        b, t, h, w, c = x.shape
        q, k, v = jnp.split(self.qkv(self.norm(x)).reshape(b * t, h * w, 3 * c), 3, axis=-1)
        logits = (q @ k.swapaxes(-1, -2)).astype(jnp.float32) / math.sqrt(c)
        out = jax.nn.softmax(logits, axis=-1).astype(v.dtype) @ v
        return x + self.proj(out.reshape(b, t, h, w, c))


class Resample(nnx.Module):
    """2x spatial down/up-sampling, optionally with 2x causal time down/up-sampling.

    Down: 3x3 stride-2 conv (pad bottom/right) per frame, then time: out[0] = x[0],
    out[j] = W . concat(x[2j-2], x[2j-1], x[2j]) for j >= 1 (needs 1 + 2m frames per chunk
    starting at frame 0, 2m frames otherwise, with the previous chunk's last frame as context).
    Up: time first: a causal (3,1,1) conv to 2C channels, each frame j >= 1 becomes two frames
    (frame 0 passes through), then nearest 2x + 3x3 conv per frame.
    """

    def __init__(self, channels: int, mode: str, time: bool, *, dtype, rngs: nnx.Rngs):
        self.mode, self.time, self.dtype, c = mode, time, dtype, channels
        stride = 2 if mode == "down" else 1
        self.spatial = CausalConv3d(c, c, (1, 3, 3), stride, dtype=dtype, rngs=rngs)
        if time and mode == "down":
            self.time_kernel = _init((3 * c, c), 3 * c, rngs)
            self.time_bias = nnx.Param(jnp.zeros((c,), jnp.float32))
        elif time:
            self.time_conv = CausalConv3d(c, 2 * c, (3, 1, 1), dtype=dtype, rngs=rngs)

    def _down_time(self, x: jax.Array, stream: _Stream | None) -> jax.Array:
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

    def _up_time(self, x: jax.Array, stream: _Stream | None) -> jax.Array:
        b, t, h, w, c = x.shape
        y = self.time_conv(x, stream).reshape(b, t, h, w, 2, c)
        y = y.transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * t, h, w, c)  # frame j -> 2j, 2j+1
        if stream is None or stream.start:
            y = jnp.concatenate([x[:, :1].astype(y.dtype), y[:, 2:]], axis=1)
        return y

    def __call__(self, x: jax.Array, stream: _Stream | None = None) -> jax.Array:
        if self.mode == "down":
            x = self.spatial(x)
            return self._down_time(x, stream) if self.time else x
        if self.time:
            x = self._up_time(x, stream)
        x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
        return self.spatial(x)


class _Tower(nnx.Module):
    """Encoder (mode="down") or decoder (mode="up") trunk: a list of layers run in order."""

    def __init__(self, cfg: VAEConfig, mode: str, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.dtype)
        chans = [cfg.base_channels * m for m in cfg.channel_mults]
        n = cfg.num_resamples
        layers: list[nnx.Module] = []
        if mode == "down":
            layers.append(CausalConv3d(cfg.in_channels, chans[0], dtype=dtype, rngs=rngs))
            cin = chans[0]
            for level, cout in enumerate(chans):
                for _ in range(cfg.num_res_blocks):
                    layers.append(ResBlock(cin, cout, dtype=dtype, rngs=rngs))
                    cin = cout
                if level < n:  # time down-sampling at the last (lowest-resolution) resamplers
                    time = level >= n - cfg.num_time_resamples
                    layers.append(Resample(cout, "down", time, dtype=dtype, rngs=rngs))
            layers += self._mid(cin, cfg, dtype, rngs)
        else:
            cin = chans[-1]
            layers.append(CausalConv3d(cfg.latent_channels, cin, dtype=dtype, rngs=rngs))
            layers += self._mid(cin, cfg, dtype, rngs)
            for level in reversed(range(len(chans))):
                for _ in range(cfg.num_res_blocks):
                    layers.append(ResBlock(cin, chans[level], dtype=dtype, rngs=rngs))
                    cin = chans[level]
                if level > 0:  # time up-sampling at the first (lowest-resolution) resamplers
                    time = level > n - cfg.num_time_resamples
                    layers.append(Resample(cin, "up", time, dtype=dtype, rngs=rngs))
        self.layers = nnx.List(layers)
        self.out_channels = cin
        self.remat = cfg.remat

    @staticmethod
    def _mid(c: int, cfg: VAEConfig, dtype, rngs: nnx.Rngs) -> list[nnx.Module]:
        mid: list[nnx.Module] = [ResBlock(c, c, dtype=dtype, rngs=rngs)]
        if cfg.mid_attention:
            mid.append(FrameAttention(c, dtype=dtype, rngs=rngs))
        return mid + [ResBlock(c, c, dtype=dtype, rngs=rngs)]

    def __call__(self, x: jax.Array, stream: _Stream | None = None) -> jax.Array:
        for layer in self.layers:
            if self.remat and stream is None and isinstance(layer, ResBlock):
                x = nnx.remat(lambda blk, a: blk(a))(layer, x)
            else:
                x = layer(x, stream)
        return x


class CausalVideoVAE(nnx.Module):
    """KL-regularised causal video autoencoder (see module docstring for shapes and causality)."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype = jnp.dtype(cfg.dtype)
        self.encoder = _Tower(cfg, "down", rngs=rngs)
        c_enc = self.encoder.out_channels
        self.enc_norm = RMSNorm(c_enc)
        self.enc_out = CausalConv3d(c_enc, 2 * cfg.latent_channels, dtype=dtype, rngs=rngs)
        self.decoder = _Tower(cfg, "up", rngs=rngs)
        c_dec = self.decoder.out_channels
        self.dec_norm = RMSNorm(c_dec)
        self.dec_out = CausalConv3d(c_dec, cfg.in_channels, dtype=dtype, rngs=rngs)

    # -- one chunk (or the whole clip when stream is None) ---------------------------------

    def _encode(self, x: jax.Array, stream: _Stream | None) -> tuple[jax.Array, jax.Array]:
        h = self.encoder(x, stream)
        h = self.enc_out(nnx.silu(self.enc_norm(h)), stream).astype(jnp.float32)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def _decode(self, z: jax.Array, stream: _Stream | None) -> jax.Array:
        h = self.decoder(z, stream)
        return self.dec_out(nnx.silu(self.dec_norm(h)), stream).astype(jnp.float32)

    def _check_clip(self, x: jax.Array) -> None:
        cfg = self.cfg
        if x.ndim != 5 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"VAE expects clips [B, T, H, W, {cfg.in_channels}], got {x.shape}")
        cfg.latent_shape(*x.shape[1:4])

    def _check_latents(self, z: jax.Array) -> None:
        if z.ndim != 5 or z.shape[-1] != self.cfg.latent_channels:
            raise ValueError(
                f"VAE expects latents [B, T, h, w, {self.cfg.latent_channels}], got {z.shape}"
            )

    # -- public API -------------------------------------------------------------------------

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Clip `[B, 1+tf*k, H, W, C]` -> (mean, logvar) `[B, 1+k, H/sf, W/sf, Cz]` (float32)."""
        self._check_clip(x)
        return self._encode(x, None)

    def decode(self, z: jax.Array) -> jax.Array:
        """Latents `[B, 1+k, h, w, Cz]` -> clip `[B, 1+tf*k, h*sf, w*sf, C]` (float32)."""
        self._check_latents(z)
        return self._decode(z, None)

    def __call__(
        self, x: jax.Array, rng: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(reconstruction, mean, logvar); z ~ N(mean, exp(logvar)) with `rng`, z = mean without."""
        mean, logvar = self.encode(x)
        z = mean
        if rng is not None:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
        return self.decode(z), mean, logvar

    def loss(
        self, x: jax.Array, rng: jax.Array | None, *, recon: str = "l1", kl_weight: float = 1e-6
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Run the VAE on x and return `vae_loss(...)`."""
        out, mean, logvar = self(x, rng)
        return vae_loss(out, x, mean, logvar, recon=recon, kl_weight=kl_weight)

    def encode_chunked(
        self, x: jax.Array, latents_per_chunk: int = 1
    ) -> tuple[jax.Array, jax.Array]:
        """`encode` in chunks of 1, tf*n, tf*n, ... frames with cached causal context.

        Same result as `encode` (to float tolerance); activation memory is that of one chunk.
        """
        self._check_clip(x)
        tf, n = self.cfg.temporal_downsample, latents_per_chunk
        return _chunked(self._encode, x, tf * n, n_out=2)

    def decode_chunked(self, z: jax.Array, latents_per_chunk: int = 1) -> jax.Array:
        """`decode` in chunks of 1, n, n, ... latent frames with cached causal context."""
        self._check_latents(z)
        return _chunked(self._decode, z, latents_per_chunk, n_out=1)[0]


def _chunked(fn, x: jax.Array, chunk: int, n_out: int) -> tuple[jax.Array, ...]:
    """Run `fn(chunk, stream) -> out(s)` over frame 0, then `chunk`-frame pieces, in a scan."""
    if chunk < 1:
        raise ValueError(f"latents_per_chunk must be >= 1, got {chunk}")

    def call(piece, frames):
        stream = _Stream(frames)
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


def vae_loss(
    reconstruction: jax.Array,
    x: jax.Array,
    mean: jax.Array,
    logvar: jax.Array,
    *,
    recon: str = "l1",
    kl_weight: float = 1e-6,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Reconstruction (mean |.| or mean squared error per element) + kl_weight * KL.

    KL(N(mean, exp(logvar)) || N(0, 1)) is summed over latent elements of a clip and divided by
    the number of pixel elements of that clip, so kl_weight is a per-pixel trade-off that does
    not change with resolution or clip length. Returns (loss, metrics) with metrics loss,
    recon, kl, mse, psnr (for data in [-1, 1]).
    """
    if recon not in ("l1", "l2"):
        raise ValueError(f"vae_loss: recon must be 'l1' or 'l2', got {recon!r}")
    diff = reconstruction.astype(jnp.float32) - x.astype(jnp.float32)
    mse = jnp.mean(jnp.square(diff))
    rec = jnp.mean(jnp.abs(diff)) if recon == "l1" else mse
    kl_elems = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    pixels_per_latent = x[0].size / mean[0].size
    kl = jnp.mean(kl_elems) / pixels_per_latent
    loss = rec + kl_weight * kl
    psnr = 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))
    return loss, {"loss": loss, "recon": rec, "kl": kl, "mse": mse, "psnr": psnr}
