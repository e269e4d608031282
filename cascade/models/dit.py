"""Latent DiT: a transformer over spacetime patches of video latents (flow-matching velocity net).

Shapes: latents `x [B, T, h, w, C]` -> patches of `(pt, ph, pw)` -> `L = T/pt * h/ph * w/pw`
tokens of width `D = hidden_size` -> `depth` blocks of 3D self-attention + MLP -> final adaLN +
linear -> unpatchify to `[B, T, h, w, C]`.

- Attention: full (every token sees every spacetime token), or with `causal_chunk` = c > 0
  block-causal over chunks of c latent frames (a token sees its own chunk and earlier ones),
  the autoregressive video DiT of Diffusion Forcing / CausVid. A causal DiT can also run one
  chunk at a time against a `KVCache` of earlier chunks (`forward_chunk`), which equals the
  full causal pass (the rollout sampler: `cascade.diffusion.rollout`).
- Noise level: flow time t per sample `[B]`, or per latent frame `[B, T]` (Diffusion Forcing):
  then the adaLN modulation is per frame, each frame's token rows modulated by its own t.

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

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cascade.models.attention import attention_einsum
from cascade.models.dit_config import DiTConfig
from cascade.models.dit_ops import (
    apply_rope,
    block_causal_mask,
    gated_add,
    grid_positions,
    modulate,
    rope_tables,
    rope_tables_at,
)
from cascade.models.kv_cache import KVCache
from cascade.models.ops import dropout, rms_norm, sinusoidal_embedding

__all__ = ["DiTBlock", "DiTConfig", "KVCache", "LatentDiT", "grid_positions", "rope_tables"]

# ----------------------------------------------------------------------------- helpers


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

    def attention(
        self,
        x: jax.Array,
        batch: int,
        cos: jax.Array,
        sin: jax.Array,
        mask: np.ndarray | None = None,
    ) -> jax.Array:
        """Self-attention over the L tokens of each sample. x `[B*L, D]` -> `[B*L, D]`;
        `mask` `[L, L]` bool (query, key) or None (full attention)."""
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
        q, k = apply_rope(q, cos, sin, seq_axis), apply_rope(k, cos, sin, seq_axis)
        mask = None if mask is None else mask[None, None]
        if self.impl == "einsum":
            out = attention_einsum(q, k, v, mask).transpose(0, 2, 1, 3)
        else:
            out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=self.impl)
        return self.proj(out.reshape(bl, d))

    def attention_cached(
        self,
        x: jax.Array,
        batch: int,
        cos: jax.Array,
        sin: jax.Array,
        past_k: jax.Array,
        past_v: jax.Array,
        past_valid: jax.Array,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Attention of one chunk's tokens x `[B*Lc, D]` to themselves and to cached keys and
        values `[B, S, N, Hd]` (rotated keys) where `past_valid` `[S]` is True. Returns the
        output `[B*Lc, D]` and this chunk's (k, v) `[B, Lc, N, Hd]`, for the cache."""
        bl, d = x.shape
        n, hd = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(batch, bl // batch, 3, n, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.qk_norm:
            q, k = rms_norm(q, self.q_scale[...]), rms_norm(k, self.k_scale[...])
        q, k = apply_rope(q, cos, sin, 1), apply_rope(k, cos, sin, 1)
        keys = jnp.concatenate([past_k.astype(k.dtype), k], axis=1)
        values = jnp.concatenate([past_v.astype(v.dtype), v], axis=1)
        visible = jnp.concatenate([past_valid, jnp.ones((k.shape[1],), bool)])
        mask = visible[None, None, None, :]  # every query of the chunk sees the same keys
        if self.impl == "einsum":
            heads = (a.transpose(0, 2, 1, 3) for a in (q, keys, values))
            out = attention_einsum(*heads, mask).transpose(0, 2, 1, 3)
        else:
            out = jax.nn.dot_product_attention(q, keys, values, mask=mask)
        return self.proj(out.reshape(bl, d)), (k, v)

    def forward(
        self,
        x: jax.Array,
        mod: jax.Array,
        attend: Callable[[jax.Array, int], jax.Array],
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """The block around an attention function `attend(x [B*L, D], B) -> [B*L, D]`.

        x `[B*L, D]`; mod: the shared modulation `[B, 6, D]` / `[B, G, 6, D]` (per frame), or
        c `[B, D]` / `[B, G, D]` when each block has its own adaLN linear.
        """
        if hasattr(self, "mod_table"):
            mod = mod + self.mod_table[...].astype(mod.dtype)[None]
        else:
            mod = self.ada(nnx.silu(mod)).reshape(*mod.shape[:-1], 6, -1)
        b = mod.shape[0]
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod[..., i, :] for i in range(6))
        r1, r2 = (None, None) if rng is None else jax.random.split(rng)
        h = attend(modulate(x, shift1, scale1), b)
        x = gated_add(x, dropout(h, self.dropout, r1), gate1)
        h = self.fc2(nnx.gelu(self.fc1(modulate(x, shift2, scale2))))
        return gated_add(x, dropout(h, self.dropout, r2), gate2)

    def __call__(
        self,
        x: jax.Array,
        mod: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        rng: jax.Array | None = None,
        mask: np.ndarray | None = None,
    ) -> jax.Array:
        """x `[B*L, D]`; mod as in `forward`; mask `[L, L]` or None (full attention)."""
        return self.forward(x, mod, lambda y, b: self.attention(y, b, cos, sin, mask), rng)


class LatentDiT(nnx.Module):
    """Velocity network on VAE latents: `__call__(x [B,T,h,w,C], t [B] | [B,T]) -> [B,T,h,w,C]`."""

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
        """Conditioning c `[B, D]` from flow time t `[B]`, or `[B, G, D]` from per-frame times
        t `[B, G]` (the label's embedding is shared by the G frames); labels `[B]` or None."""
        cfg = self.cfg
        # cos-then-sin of 1000 t: the DiT/ADM convention (the U-Net uses VDM's sin-then-cos).
        emb = sinusoidal_embedding(t.reshape(-1), cfg.time_embed_dim, scale=1000.0, cos_first=True)
        emb = emb.astype(jnp.dtype(cfg.dtype))
        c = self.t_fc2(nnx.silu(self.t_fc1(emb)))
        if t.ndim == 2:
            c = c.reshape(*t.shape, -1)
        if cfg.num_classes > 0:
            if label is None:  # unconditional = the null label
                label = jnp.full((t.shape[0],), cfg.num_classes, jnp.int32)
            y = self.label_embed(jnp.asarray(label, jnp.int32))
            c = c + (y[:, None] if t.ndim == 2 else y)
        elif label is not None:
            raise ValueError("LatentDiT: got a label but DiTConfig.num_classes == 0")
        return c

    def _levels(self, t: jax.Array, x: jax.Array) -> jax.Array:
        """Flow times as the network uses them: `[B]` from a scalar or `[B]`; `[B, T/pt]` from
        per-frame times `[B, T]` (one level per temporal patch: its first frame's)."""
        t = jnp.asarray(t, jnp.float32)
        b, frames = x.shape[:2]
        if t.ndim < 2:
            return jnp.broadcast_to(t, (b,))
        if t.shape != (b, frames):
            raise ValueError(
                f"LatentDiT: per-frame flow times must be [B, T] = {(b, frames)}, got {t.shape}"
            )
        pt = self.cfg.patch_size[0]
        return t.reshape(b, frames // pt, pt)[:, :, 0]

    def _patchify(self, x: jax.Array) -> jax.Array:
        """[B,T,h,w,C] -> flat tokens [B*L, D] (one transpose of the small input)."""
        b, tt, hh, ww, ch = x.shape
        pt, ph, pw = self.cfg.patch_size
        gt, gh, gw = tt // pt, hh // ph, ww // pw
        p = x.astype(jnp.dtype(self.cfg.dtype)).reshape(b, gt, pt, gh, ph, gw, pw, ch)
        p = p.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b * gt * gh * gw, pt * ph * pw * ch)
        return self.patch_embed(p)

    def _output(self, h: jax.Array, c: jax.Array, x: jax.Array) -> jax.Array:
        """Final adaLN + linear on tokens h `[B*L, D]`, unpatchified to x's shape and dtype."""
        b, tt, hh, ww, ch = x.shape
        pt, ph, pw = self.cfg.patch_size
        shift, scale = jnp.split(self.final_ada(nnx.silu(c)), 2, axis=-1)
        out = self.final(modulate(h, shift, scale))  # [B*L, pt*ph*pw*C]
        out = out.reshape(b, tt // pt, hh // ph, ww // pw, pt, ph, pw, ch)
        out = out.transpose(0, 1, 4, 2, 5, 3, 6, 7)
        return out.reshape(b, tt, hh, ww, ch).astype(x.dtype)

    def _modulation(self, c: jax.Array) -> jax.Array:
        if not self.cfg.shared_adaln:
            return c
        return self.ada(nnx.silu(c)).reshape(*c.shape[:-1], 6, -1)

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        label: jax.Array | None = None,
        deterministic: bool = True,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Velocity `[B, T, h, w, C]` for latents x `[B, T, h, w, C]` at flow time t.

        t: a scalar (broadcast to the batch), `[B]`, or `[B, T]` per latent frame (Diffusion
        Forcing; constant within a temporal patch). `rng` is the dropout key, needed only when
        `deterministic=False` and `cfg.dropout > 0`.
        """
        cfg = self.cfg
        self._check_shape(x)
        t = self._levels(t, x)
        if not deterministic and cfg.dropout > 0 and rng is None:
            raise ValueError("LatentDiT: dropout > 0 with deterministic=False needs rng=")
        rng = None if deterministic or cfg.dropout == 0 else rng
        pt, ph, pw = cfg.patch_size
        gt, gh, gw = x.shape[1] // pt, x.shape[2] // ph, x.shape[3] // pw
        h = self._patchify(x)
        cos, sin = rope_tables(grid_positions(gt, gh, gw), cfg.axes_dim, cfg.rope_theta)
        mask = None
        if cfg.causal_chunk:
            mask = block_causal_mask(gt, gh * gw, cfg.causal_chunk // pt)
        c = self.condition(t, label)
        mod = self._modulation(c)

        def run_block(block: DiTBlock, h, mod, cos, sin, key):
            return block(h, mod, cos, sin, key, mask)

        if cfg.remat:
            run_block = nnx.remat(run_block)
        barrier = jax.default_backend() == "cpu"  # see _materialize; GPU/TPU fuse sensibly
        finite = jnp.all(jnp.isfinite(t))
        keys = [None] * cfg.depth if rng is None else list(jax.random.split(rng, cfg.depth))
        for block, key in zip(self.blocks, keys, strict=True):
            h = run_block(block, h, mod, cos, sin, key)
            h = _materialize(h, finite) if barrier else h
        return self._output(h, c, x)

    def forward_chunk(
        self,
        x: jax.Array,
        t: jax.Array,
        cache: KVCache,
        frame_offset: jax.Array | int,
        *,
        label: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """One chunk of a block-causal DiT against a cache of earlier chunks (inference only).

        x `[B, causal_chunk, h, w, C]` latents at flow time t (`[B]`, scalar or `[B, c]`), the
        chunk's first latent frame being frame `frame_offset` of the video (may be traced: RoPE
        is computed in jnp). Returns the velocity `[B, c, h, w, C]` and the chunk's keys and
        values `[depth, B, Lc, N, Hd]` per block, which `KVCache.push` appends. Equals the
        chunk's rows of `__call__` on the whole causal sequence (the cached chunks were computed
        at their own flow times).
        """
        cfg = self.cfg
        self._check_shape(x)
        if not cfg.causal_chunk or x.shape[1] != cfg.causal_chunk:
            raise ValueError(
                f"LatentDiT.forward_chunk needs a causal DiT (causal_chunk > 0) and chunks of "
                f"causal_chunk={cfg.causal_chunk} latent frames, got {x.shape[1]} frames"
            )
        t = self._levels(t, x)
        pt, ph, pw = cfg.patch_size
        gt, gh, gw = x.shape[1] // pt, x.shape[2] // ph, x.shape[3] // pw
        h = self._patchify(x)
        offset = jnp.asarray(frame_offset, jnp.float32) / pt  # token-grid time coordinate
        cos, sin = rope_tables_at(grid_positions(gt, gh, gw), offset, cfg.axes_dim, cfg.rope_theta)
        c = self.condition(t, label)
        mod = self._modulation(c)
        barrier = jax.default_backend() == "cpu"
        finite = jnp.all(jnp.isfinite(t))
        new_k, new_v = [], []
        for i, block in enumerate(self.blocks):
            kv = []

            def attend(y, b, block=block, i=i, kv=kv):
                out, new = block.attention_cached(
                    y, b, cos, sin, cache.k[i], cache.v[i], cache.valid
                )
                kv.append(new)
                return out

            h = block.forward(h, mod, attend)
            h = _materialize(h, finite) if barrier else h
            new_k.append(kv[0][0])
            new_v.append(kv[0][1])
        return self._output(h, c, x), (jnp.stack(new_k), jnp.stack(new_v))
