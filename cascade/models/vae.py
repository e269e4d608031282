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

import jax
import jax.numpy as jnp
from flax import nnx

from cascade.models.causal_blocks import (
    CausalConv3d,
    CausalResample,
    CausalResBlock,
    ChunkContext,
    FrameAttention,
    RMSNorm,
    run_chunked,
)
from cascade.models.ops import COMPUTE_DTYPES


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
        if self.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"VAEConfig.dtype must be one of {COMPUTE_DTYPES}, got {self.dtype!r}")
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
                    layers.append(CausalResBlock(cin, cout, dtype=dtype, rngs=rngs))
                    cin = cout
                if level < n:  # time down-sampling at the last (lowest-resolution) resamplers
                    time = level >= n - cfg.num_time_resamples
                    layers.append(CausalResample(cout, "down", time, dtype=dtype, rngs=rngs))
            layers += self._mid(cin, cfg, dtype, rngs)
        else:
            cin = chans[-1]
            layers.append(CausalConv3d(cfg.latent_channels, cin, dtype=dtype, rngs=rngs))
            layers += self._mid(cin, cfg, dtype, rngs)
            for level in reversed(range(len(chans))):
                for _ in range(cfg.num_res_blocks):
                    layers.append(CausalResBlock(cin, chans[level], dtype=dtype, rngs=rngs))
                    cin = chans[level]
                if level > 0:  # time up-sampling at the first (lowest-resolution) resamplers
                    time = level > n - cfg.num_time_resamples
                    layers.append(CausalResample(cin, "up", time, dtype=dtype, rngs=rngs))
        self.layers = nnx.List(layers)
        self.out_channels = cin
        self.remat = cfg.remat

    @staticmethod
    def _mid(c: int, cfg: VAEConfig, dtype, rngs: nnx.Rngs) -> list[nnx.Module]:
        mid: list[nnx.Module] = [CausalResBlock(c, c, dtype=dtype, rngs=rngs)]
        if cfg.mid_attention:
            mid.append(FrameAttention(c, dtype=dtype, rngs=rngs))
        return mid + [CausalResBlock(c, c, dtype=dtype, rngs=rngs)]

    def __call__(self, x: jax.Array, stream: ChunkContext | None = None) -> jax.Array:
        for layer in self.layers:
            if self.remat and stream is None and isinstance(layer, CausalResBlock):
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

    def _encode(self, x: jax.Array, stream: ChunkContext | None) -> tuple[jax.Array, jax.Array]:
        h = self.encoder(x, stream)
        h = self.enc_out(nnx.silu(self.enc_norm(h)), stream).astype(jnp.float32)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def _decode(self, z: jax.Array, stream: ChunkContext | None) -> jax.Array:
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
        return run_chunked(self._encode, x, tf * n, n_out=2)

    def decode_chunked(self, z: jax.Array, latents_per_chunk: int = 1) -> jax.Array:
        """`decode` in chunks of 1, n, n, ... latent frames with cached causal context."""
        self._check_latents(z)
        return run_chunked(self._decode, z, latents_per_chunk, n_out=1)[0]


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
