"""Hyper-parameters of the latent DiT (`cascade.models.dit.LatentDiT`), checked on construction."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cascade.models.ops import COMPUTE_DTYPES

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
    # Latent frames per chunk of block-causal attention (a multiple of patch_size[0]);
    # 0 = bidirectional (full) attention.
    causal_chunk: int = 0

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
        if self.attention_impl == "cudnn" and self.dtype == "float32":
            raise ValueError(
                "DiTConfig.attention_impl='cudnn' needs dtype 'bfloat16' or 'float16' (cuDNN's "
                "fused attention takes no float32); set model.dtype=bfloat16, or attention_impl "
                "None / 'xla' for float32"
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
        if self.causal_chunk < 0 or self.causal_chunk % self.patch_size[0]:
            raise ValueError(
                f"DiTConfig.causal_chunk must be 0 (bidirectional) or a positive multiple of "
                f"patch_size[0]={self.patch_size[0]}, got {self.causal_chunk}"
            )

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
