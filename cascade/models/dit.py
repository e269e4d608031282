"""Latent DiT: a transformer over spacetime patches of video latents (flow-matching velocity net).

Shapes: latents `x [B, T, h, w, C]` -> patches of `(pt, ph, pw)` -> `L = T/pt * h/ph * w/pw`
tokens of width `D = hidden_size` -> `depth` blocks of full 3D self-attention (every token sees
every spacetime token) + MLP -> final adaLN + linear -> unpatchify to `[B, T, h, w, C]`.

- Position: 3D rotary embeddings; the head dim is split into t/h/w parts, each rotated by its
  own axis coordinate, so attention logits depend only on relative (dt, dh, dw).
- Conditioning: adaLN-zero on `c = emb(t * 1000) + emb(label)`; label `num_classes` is the null
  label for classifier-free guidance. With `shared_adaln` (PixArt-alpha / Wan style) one linear
  maps c to the 6 modulation vectors for all blocks and each block adds its own learned table;
  otherwise each block has its own linear (original DiT). Gates, modulation and the output
  layer start at zero, so the network outputs exactly zero at init.
- QK-RMSNorm per head, fused qkv projection (one big matmul), attention through
  `jax.nn.dot_product_attention` (`attention_impl`: None lets XLA/cuDNN choose).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cascade.models.attention import attention_einsum
from cascade.models.ops import COMPUTE_DTYPES, dropout, rms_norm, sinusoidal_embedding

_ATTN_IMPLS = (None, "xla", "cudnn", "einsum")


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Latent DiT hyper-parameters (`LatentDiT(DiTConfig(**config.model), rngs=...)`)."""

    in_channels: int = 4  # latent channels Cz (input and output)
    patch_size: Sequence[int] = (1, 2, 2)  # (pt, ph, pw)
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 0  # 0 = unconditional; class `num_classes` is the null (CFG) label
    time_embed_dim: int = 256  # sinusoidal features of t * 1000
    rope_theta: float = 10000.0
    rope_axes_dim: Sequence[int] | None = None  # head-dim split (t, h, w); None = auto
    qk_norm: bool = True
    shared_adaln: bool = True
    dropout: float = 0.0  # on each residual branch, only when deterministic=False
    # None / "xla" / "cudnn": jax.nn.dot_product_attention (None lets XLA/cuDNN choose);
    # "einsum": explicit [B, N, L, Hd] batched matmuls + softmax, ~3x faster on CPU (training).
    attention_impl: str | None = None
    dtype: str = "float32"  # compute dtype; parameters stay float32
    remat: bool = False  # activation checkpointing per block

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"DiTConfig.patch_size must be 3 positive ints, got {self.patch_size}")
        if self.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"DiTConfig.dtype must be one of {COMPUTE_DTYPES}, got {self.dtype!r}")
        if self.attention_impl not in _ATTN_IMPLS:
            raise ValueError(
                f"DiTConfig.attention_impl must be one of {_ATTN_IMPLS}, got {self.attention_impl!r}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"DiTConfig.hidden_size={self.hidden_size} must be divisible by "
                f"num_heads={self.num_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"DiTConfig head dim {self.head_dim} must be even (rotary pairs)")
        if self.rope_axes_dim is not None:
            object.__setattr__(self, "rope_axes_dim", tuple(int(d) for d in self.rope_axes_dim))
        dims = self.axes_dim
        if len(dims) != 3 or sum(dims) != self.head_dim or any(d % 2 or d < 0 for d in dims):
            raise ValueError(
                f"DiTConfig.rope_axes_dim must be 3 even ints summing to the head dim "
                f"{self.head_dim}, got {dims}"
            )
        if self.num_classes < 0 or self.depth < 1 or self.time_embed_dim % 2:
            raise ValueError(
                "DiTConfig needs num_classes >= 0, depth >= 1 and an even time_embed_dim, got "
                f"{self.num_classes}, {self.depth}, {self.time_embed_dim}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DiTConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def axes_dim(self) -> tuple[int, int, int]:
        """Head-dim channels rotated by the (t, h, w) coordinate (Wan's split by default)."""
        if self.rope_axes_dim is not None:
            return tuple(self.rope_axes_dim)
        hw = 2 * (self.head_dim // 6)
        return (self.head_dim - 2 * hw, hw, hw)


# ----------------------------------------------------------------------------- helpers


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


def grid_positions(t: int, h: int, w: int) -> np.ndarray:
    """Integer (t, h, w) coordinates of a token grid in row-major order, `[t*h*w, 3]`."""
    tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([tt, hh, ww], axis=-1).reshape(-1, 3).astype(np.float32)


def _apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, seq_axis: int) -> jax.Array:
    """Rotate x `[B, L, N, Hd]` (seq_axis=1) or `[B, N, L, Hd]` (seq_axis=2); cos/sin `[L, Hd]`."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    if seq_axis == 1:
        cos, sin = cos[:, None, :], sin[:, None, :]
    return x * cos.astype(x.dtype) + rotated * sin.astype(x.dtype)


def _layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """LayerNorm without affine (the affine comes from adaLN), statistics in float32."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN: LayerNorm(x) * (1 + scale) + shift per sample. x `[B*L, D]`, shift/scale `[B, D]`."""
    b, d = shift.shape
    y = _layer_norm(x).reshape(b, -1, d) * (1.0 + scale[:, None, :]) + shift[:, None, :]
    return y.reshape(x.shape)


def _gated_add(x: jax.Array, h: jax.Array, gate: jax.Array) -> jax.Array:
    """Residual x + gate * h per sample. x, h `[B*L, D]`, gate `[B, D]`."""
    b, d = gate.shape
    return (x.reshape(b, -1, d) + gate[:, None, :] * h.reshape(b, -1, d)).reshape(x.shape)


def _materialize(x: jax.Array, ok: jax.Array) -> jax.Array:
    """x where `ok`, NaN otherwise, through a conditional that XLA cannot fuse across.

    Used between blocks on CPU only: without it XLA:CPU fuses the cheap residual adds into
    every consumer and recomputes the whole residual stream (and its gradient) in each block,
    quadratic in depth (~20% of the step at depth 12). `optimization_barrier` is stripped on
    CPU and a conditional with identical branches is simplified away, so the other branch
    returns NaN: `ok` says the flow times are finite, in which case the output is NaN anyway.
    """
    return jax.lax.cond(ok, lambda a: a, lambda a: jnp.full_like(a, jnp.nan), x)


def _zeros_linear(din: int, dout: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        din,
        dout,
        dtype=dtype,
        kernel_init=nnx.initializers.zeros_init(),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


_xavier = nnx.initializers.xavier_uniform()


# ----------------------------------------------------------------------------- blocks


class DiTBlock(nnx.Module):
    """Pre-norm transformer block with adaLN-zero: attention then MLP, both gated.

    Tokens travel as a flat `[B*L, D]` matrix so every projection is one plain 2D GEMM (on CPU
    the gradient of a `[B, L, D]` dot with two contracting dims is ~1.5x slower).
    """

    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        d, dtype = cfg.hidden_size, jnp.dtype(cfg.dtype)
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.qk_norm, self.impl, self.dropout = cfg.qk_norm, cfg.attention_impl, cfg.dropout
        self.qkv = nnx.Linear(d, 3 * d, dtype=dtype, kernel_init=_xavier, rngs=rngs)
        self.proj = nnx.Linear(d, d, dtype=dtype, kernel_init=_xavier, rngs=rngs)
        hidden = int(d * cfg.mlp_ratio)
        self.fc1 = nnx.Linear(d, hidden, dtype=dtype, kernel_init=_xavier, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, d, dtype=dtype, kernel_init=_xavier, rngs=rngs)
        if cfg.qk_norm:
            self.q_scale = nnx.Param(jnp.ones((cfg.head_dim,), jnp.float32))
            self.k_scale = nnx.Param(jnp.ones((cfg.head_dim,), jnp.float32))
        if cfg.shared_adaln:  # learned per-block offset on the shared modulation
            self.mod_table = nnx.Param(jnp.zeros((6, d), jnp.float32))
        else:
            self.ada = _zeros_linear(d, 6 * d, dtype, rngs)

    def attention(self, x: jax.Array, batch: int, cos: jax.Array, sin: jax.Array) -> jax.Array:
        """Full self-attention over all L tokens of each sample. x `[B*L, D]` -> `[B*L, D]`."""
        bl, d = x.shape
        n, hd = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(batch, bl // batch, 3, n, hd)
        if self.impl == "einsum":  # head-major [3, B, N, L, Hd]: one transpose for q, k and v
            q, k, v = qkv.transpose(2, 0, 3, 1, 4)
            seq_axis = 2
        else:  # jax.nn.dot_product_attention layout [B, L, N, Hd]
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            seq_axis = 1
        if self.qk_norm:
            q, k = rms_norm(q, self.q_scale[...]), rms_norm(k, self.k_scale[...])
        q, k = _apply_rope(q, cos, sin, seq_axis), _apply_rope(k, cos, sin, seq_axis)
        if self.impl == "einsum":
            out = attention_einsum(q, k, v).transpose(0, 2, 1, 3)
        else:
            out = jax.nn.dot_product_attention(q, k, v, implementation=self.impl)
        return self.proj(out.reshape(bl, d))

    def __call__(
        self,
        x: jax.Array,
        mod: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """x `[B*L, D]`; mod `[B, 6, D]` (shared modulation), or c `[B, D]` when per-block."""
        if hasattr(self, "mod_table"):
            mod = mod + self.mod_table[...].astype(mod.dtype)[None]
        else:
            mod = self.ada(nnx.silu(mod)).reshape(mod.shape[0], 6, -1)
        b = mod.shape[0]
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod[:, i] for i in range(6))
        r1, r2 = (None, None) if rng is None else jax.random.split(rng)
        h = self.attention(_modulate(x, shift1, scale1), b, cos, sin)
        x = _gated_add(x, dropout(h, self.dropout, r1), gate1)
        h = self.fc2(nnx.gelu(self.fc1(_modulate(x, shift2, scale2))))
        return _gated_add(x, dropout(h, self.dropout, r2), gate2)


class LatentDiT(nnx.Module):
    """Velocity network on VAE latents: `__call__(x [B,T,h,w,C], t [B]) -> [B,T,h,w,C]`."""

    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, dtype = cfg.hidden_size, jnp.dtype(cfg.dtype)
        patch_dim = int(np.prod(cfg.patch_size)) * cfg.in_channels
        self.patch_embed = nnx.Linear(patch_dim, d, dtype=dtype, kernel_init=_xavier, rngs=rngs)
        init02 = nnx.initializers.normal(0.02)
        self.t_fc1 = nnx.Linear(cfg.time_embed_dim, d, dtype=dtype, kernel_init=init02, rngs=rngs)
        self.t_fc2 = nnx.Linear(d, d, dtype=dtype, kernel_init=init02, rngs=rngs)
        if cfg.num_classes > 0:
            self.label_embed = nnx.Embed(
                cfg.num_classes + 1, d, dtype=dtype, embedding_init=init02, rngs=rngs
            )
        if cfg.shared_adaln:
            self.ada = _zeros_linear(d, 6 * d, dtype, rngs)
        self.blocks = nnx.List([DiTBlock(cfg, rngs=rngs) for _ in range(cfg.depth)])
        self.final_ada = _zeros_linear(d, 2 * d, dtype, rngs)
        self.final = _zeros_linear(d, patch_dim, dtype, rngs)

    def _check_shape(self, x: jax.Array) -> None:
        cfg = self.cfg
        if x.ndim != 5 or x.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"LatentDiT expects latents [B, T, h, w, {cfg.in_channels}], got {x.shape}"
            )
        bad = [
            f"{name}={n} not divisible by {p}"
            for name, n, p in zip(("T", "h", "w"), x.shape[1:4], cfg.patch_size, strict=True)
            if n % p
        ]
        if bad:
            raise ValueError(
                f"LatentDiT: latent shape {tuple(x.shape)} does not tile into patches "
                f"{cfg.patch_size}: " + ", ".join(bad)
            )

    def condition(self, t: jax.Array, label: jax.Array | None) -> jax.Array:
        """Conditioning vector c `[B, D]` from flow time t `[B]` and labels `[B]` (or None)."""
        cfg = self.cfg
        # cos-then-sin of 1000 t: the DiT/ADM convention (the U-Net uses VDM's sin-then-cos).
        emb = sinusoidal_embedding(t, cfg.time_embed_dim, scale=1000.0, cos_first=True)
        emb = emb.astype(jnp.dtype(cfg.dtype))
        c = self.t_fc2(nnx.silu(self.t_fc1(emb)))
        if cfg.num_classes > 0:
            if label is None:  # unconditional = the null label
                label = jnp.full((t.shape[0],), cfg.num_classes, jnp.int32)
            c = c + self.label_embed(jnp.asarray(label, jnp.int32))
        elif label is not None:
            raise ValueError("LatentDiT: got a label but DiTConfig.num_classes == 0")
        return c

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        label: jax.Array | None = None,
        deterministic: bool = True,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Velocity `[B, T, h, w, C]` for latents x `[B, T, h, w, C]` at flow time t `[B]`.

        A scalar t is broadcast to the batch. `rng` is the dropout key, needed only when
        `deterministic=False` and `cfg.dropout > 0`.
        """
        cfg = self.cfg
        self._check_shape(x)
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
        if not deterministic and cfg.dropout > 0 and rng is None:
            raise ValueError("LatentDiT: dropout > 0 with deterministic=False needs rng=")
        rng = None if deterministic or cfg.dropout == 0 else rng
        b, tt, hh, ww, ch = x.shape
        pt, ph, pw = cfg.patch_size
        gt, gh, gw = tt // pt, hh // ph, ww // pw
        dtype = jnp.dtype(cfg.dtype)

        # Patchify: [B,T,h,w,C] -> [B, L, pt*ph*pw*C] (one transpose of the small input).
        p = x.astype(dtype).reshape(b, gt, pt, gh, ph, gw, pw, ch)
        p = p.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, gt * gh * gw, pt * ph * pw * ch)
        h = self.patch_embed(p.reshape(b * gt * gh * gw, -1))  # flat tokens [B*L, D]

        cos, sin = rope_tables(grid_positions(gt, gh, gw), cfg.axes_dim, cfg.rope_theta)
        c = self.condition(t, label)
        mod = self.ada(nnx.silu(c)).reshape(b, 6, -1) if cfg.shared_adaln else c

        def run_block(block: DiTBlock, h, mod, cos, sin, key):
            return block(h, mod, cos, sin, key)

        if cfg.remat:
            run_block = nnx.remat(run_block)
        barrier = jax.default_backend() == "cpu"  # see _materialize; GPU/TPU fuse sensibly
        finite = jnp.all(jnp.isfinite(t))
        keys = [None] * cfg.depth if rng is None else list(jax.random.split(rng, cfg.depth))
        for block, key in zip(self.blocks, keys, strict=True):
            h = run_block(block, h, mod, cos, sin, key)
            h = _materialize(h, finite) if barrier else h

        shift, scale = jnp.split(self.final_ada(nnx.silu(c)), 2, axis=-1)
        out = self.final(_modulate(h, shift, scale))  # [B*L, pt*ph*pw*C]
        out = out.reshape(b, gt, gh, gw, pt, ph, pw, ch).transpose(0, 1, 4, 2, 5, 3, 6, 7)
        return out.reshape(b, tt, hh, ww, ch).astype(x.dtype)
