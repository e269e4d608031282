"""A fixed-size key/value cache of the latest chunks of a block-causal DiT (sliding window).

`LatentDiT.forward_chunk` attends one chunk of latent frames to the cached keys and values of
earlier chunks and returns its own; `push` appends them and drops the oldest chunk. The cache
holds `window` chunks whatever the video length, so one compiled rollout step serves any
length at constant memory. Slots not yet filled are marked invalid and masked out.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class KVCache(NamedTuple):
    """Keys (rotated) and values of the last `window` chunks of every block.

    k, v `[depth, B, S, N, Hd]` with S = window * tokens per chunk, oldest first;
    valid `[S]` bool, False for slots that hold no chunk yet.
    """

    k: jax.Array
    v: jax.Array
    valid: jax.Array

    @classmethod
    def empty(
        cls,
        *,
        depth: int,
        batch: int,
        window_tokens: int,
        num_heads: int,
        head_dim: int,
        dtype: jnp.dtype = jnp.float32,
    ) -> KVCache:
        """A cache of `window_tokens` invalid slots per block (no past: the first chunk)."""
        shape = (depth, batch, window_tokens, num_heads, head_dim)
        return cls(
            jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((window_tokens,), bool)
        )

    def push(self, k_new: jax.Array, v_new: jax.Array) -> KVCache:
        """The cache with a chunk's keys/values `[depth, B, Lc, N, Hd]` appended and the oldest
        Lc slots dropped (a window of 0 chunks keeps nothing)."""
        size, lc = self.k.shape[2], k_new.shape[2]
        if size == 0:
            return self
        if lc > size:
            raise ValueError(f"KVCache.push: a chunk of {lc} tokens exceeds the {size}-slot cache")
        k = jnp.concatenate([self.k[:, :, lc:], k_new.astype(self.k.dtype)], axis=2)
        v = jnp.concatenate([self.v[:, :, lc:], v_new.astype(self.v.dtype)], axis=2)
        valid = jnp.concatenate([self.valid[lc:], jnp.ones((lc,), bool)])
        return KVCache(k, v, valid)


def rollout_cache(
    cfg, batch: int, chunk_shape: tuple[int, ...], window: int, *, guided: bool = False
) -> KVCache:
    """The empty cache a rollout of `batch` videos by a DiT of config `cfg` (a `DiTConfig`)
    starts from: `window` chunks of `chunk_shape` (c, h, w, C) latents; 2 * batch rows with
    classifier-free guidance (the conditional and null-label halves keep their own context)."""
    frames, h, w = chunk_shape[:3]
    pt, ph, pw = cfg.patch_size
    tokens = (frames // pt) * (h // ph) * (w // pw)
    return KVCache.empty(
        depth=cfg.depth,
        batch=2 * batch if guided else batch,
        window_tokens=window * tokens,
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        dtype=jnp.dtype(cfg.dtype),
    )
