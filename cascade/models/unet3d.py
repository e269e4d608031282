"""VDM-style 3D U-Net: space-only residual blocks, spatial attention, switchable temporal mixing.

Layout (ADM-like): conv_in -> per level `num_res_blocks` x [ResBlock -> spatial attention
(at attn_resolutions) -> temporal attention (mode "attention")] and a 2x downsample ->
middle [block with attention, ResBlock] -> mirrored up path with skip concatenation and
nearest 2x upsample -> norm, swish, zero-initialised conv_out.

Temporal mixing (`temporal_mixing`):
- "attention": temporal self-attention with relative position bias after each spatial
  attention (VDM's factorised space-time U-Net); every conv is 1x3x3.
- "conv3d": every residual-block conv is a full 3x3x3 conv.
- "temporal_conv": every 1x3x3 conv is followed by a residual 3x1x1 conv ((2+1)D, as in
  Imagen Video's super-resolution models), zero-initialised.
- "none": frames are processed independently (an image model applied per frame).

Conditioning: log-SNR (sinusoidal features of the matching cosine time), an optional class
label (`num_classes` real classes + one null class at index `num_classes` for
classifier-free guidance) and an optional noise-augmentation log-SNR (`use_aug_cond`, for
super-resolution stages) are summed into one embedding added in every residual block.

Dropout is functional: pass `deterministic=False, dropout_rng=key` to `__call__`; the model
keeps no RNG state, so it works unchanged inside a plain `jax.jit` of an `nnx.merge`d model.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
from flax import nnx

from cascade.models.attention import SpatialAttention, TemporalAttention
from cascade.models.layers import (
    Dense,
    GroupNorm,
    ResBlock,
    SpaceConv,
    init_params,
    logsnr_to_unit,
    tagged_param,
    temporal_links,
)
from cascade.models.ops import COMPUTE_DTYPES, sinusoidal_embedding, upsample_nearest

TEMPORAL_MIXING = ("attention", "conv3d", "temporal_conv", "none")
_CONV_KIND = {"attention": "space", "none": "space", "temporal_conv": "space+temporal"}
_CONV_KIND["conv3d"] = "3d"


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of `UNet3D`; `UNetConfig(**config.model)` from a ConfigDict.

    in_channels counts every input channel (noisy target + concatenated conditioning);
    image_size is the training H = W: attention resolutions refer to its levels (inputs of
    any size divisible by 2**(len(channel_mults)-1) run, with attention at the same levels);
    attn_resolutions are spatial sizes (e.g. (16, 8)) where spatial attention runs;
    temporal_attn_resolutions (None = same as attn_resolutions) where temporal attention
    runs when temporal_mixing == "attention"; emb_channels None = 4 * base_channels;
    scale_shift uses the embedding as FiLM scale/shift after the second norm (else added).
    """

    in_channels: int = 3
    out_channels: int = 3
    image_size: int = 32
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16, 8)
    temporal_mixing: str = "attention"
    temporal_attn_resolutions: tuple[int, ...] | None = None
    mid_attention: bool = True
    num_heads: int = 4
    norm_groups: int = 32
    emb_channels: int | None = None
    scale_shift: bool = True
    dropout: float = 0.0
    num_classes: int = 0
    use_aug_cond: bool = False
    dtype: str = "float32"
    remat: bool = False

    def __post_init__(self):
        # ConfigDicts hand over lists; store tuples so the config stays hashable.
        for name in ("channel_mults", "attn_resolutions", "temporal_attn_resolutions"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))
        self._validate()

    def _validate(self):
        def fail(field, msg):
            raise ValueError(f"UNetConfig.{field}: {msg}")

        for name in ("in_channels", "out_channels", "base_channels", "num_res_blocks"):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1, got {getattr(self, name)}")
        if not self.channel_mults:
            fail("channel_mults", "must name at least one level, e.g. (1, 2, 2, 4)")
        if any(m < 1 for m in self.channel_mults):
            fail("channel_mults", f"multipliers must be >= 1, got {self.channel_mults}")
        if self.temporal_mixing not in TEMPORAL_MIXING:
            fail("temporal_mixing", f"{self.temporal_mixing!r} not in allowed {TEMPORAL_MIXING}")
        if self.dtype not in COMPUTE_DTYPES:
            fail("dtype", f"{self.dtype!r} not in allowed {COMPUTE_DTYPES}")
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size < factor or self.image_size % factor:
            fail(
                "image_size",
                f"{self.image_size} must be divisible by 2**(len(channel_mults)-1) = {factor}",
            )
        reachable = self.resolutions
        for name in ("attn_resolutions", "temporal_attn_resolutions"):
            bad = [r for r in getattr(self, name) or () if r not in reachable]
            if bad:
                fail(name, f"{bad} not reachable; the U-Net levels have sizes {reachable}")
        if self.base_channels % self.norm_groups:
            fail(
                "norm_groups",
                f"{self.norm_groups} must divide base_channels ({self.base_channels})",
            )
        levels = zip(self.channel_mults, reachable, strict=True)
        attn_res = set(self.attn_resolutions) | set(self.temporal_attn)
        heads_needed = [self.base_channels * m for m, r in levels if r in attn_res]
        if self.mid_attention:
            heads_needed.append(self.base_channels * self.channel_mults[-1])
        bad = [c for c in heads_needed if c % self.num_heads]
        if self.num_heads < 1 or bad:
            fail("num_heads", f"{self.num_heads} must divide attention channels {bad}")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.num_classes < 0:
            fail("num_classes", f"must be >= 0 (0 = unconditional), got {self.num_classes}")
        if self.emb_channels is not None and self.emb_channels < 1:
            fail("emb_channels", f"must be >= 1 or None, got {self.emb_channels}")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Spatial size at each level, e.g. (32, 16, 8, 4)."""
        return tuple(self.image_size // 2**i for i in range(len(self.channel_mults)))

    @property
    def temporal_attn(self) -> tuple[int, ...]:
        """Resolutions with temporal attention (empty unless temporal_mixing == 'attention')."""
        if self.temporal_mixing != "attention":
            return ()
        res = self.temporal_attn_resolutions
        return self.attn_resolutions if res is None else res


class UNetBlock(nnx.Module):
    """ResBlock, then optional spatial attention, then optional temporal attention."""

    def __init__(
        self,
        cin: int,
        cout: int,
        cfg: UNetConfig,
        *,
        spatial: bool,
        temporal: bool,
        rngs: nnx.Rngs | None,
    ):
        emb_dim = cfg.emb_channels or 4 * cfg.base_channels
        self.res = ResBlock(
            cin,
            cout,
            emb_dim,
            groups=cfg.norm_groups,
            conv=_CONV_KIND[cfg.temporal_mixing],
            scale_shift=cfg.scale_shift,
            dropout=cfg.dropout,
            rngs=None,
            dtype=cfg.dtype,
        )
        g, n, dt = cfg.norm_groups, cfg.num_heads, cfg.dtype
        self.spatial = SpatialAttention(cout, n, g, rngs=None, dtype=dt) if spatial else None
        self.temporal = TemporalAttention(cout, n, g, rngs=None, dtype=dt) if temporal else None
        if rngs is not None:
            init_params(self, rngs)

    def __call__(self, x, emb, links, image_mask, dropout_rng):
        x = self.res(x, emb, links, dropout_rng)
        if self.spatial is not None:
            x = self.spatial(x)
        if self.temporal is not None:
            x = self.temporal(x, image_mask)
        return x


class Resample(nnx.Module):
    """2x spatial down (strided 3x3 conv) or up (nearest repeat + 3x3 conv) sampling.

    Not the VAE's `causal_blocks.CausalResample`: that one pads bottom/right only, can also
    resample time causally (frame 0 on its own) and streams chunks; the nearest upsampling
    (`ops.upsample_nearest`) is the part both share.
    """

    def __init__(self, channels: int, up: bool, *, rngs: nnx.Rngs | None, dtype: str):
        self.conv = SpaceConv(channels, channels, stride=1 if up else 2, rngs=rngs, dtype=dtype)
        self.up = up

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(upsample_nearest(x) if self.up else x)


class UNet3D(nnx.Module):
    """Video U-Net: [B, T, H, W, in_channels] + log-SNR [B] -> [B, T, H, W, out_channels]."""

    def __init__(self, cfg: UNetConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        base, dt = cfg.base_channels, cfg.dtype
        emb_dim = cfg.emb_channels or 4 * base
        self.logsnr_mlp = nnx.List(
            [Dense(base, emb_dim, rngs=None), Dense(emb_dim, emb_dim, rngs=None)]
        )
        if cfg.use_aug_cond:
            self.aug_mlp = nnx.List(
                [Dense(base, emb_dim, rngs=None), Dense(emb_dim, emb_dim, rngs=None)]
            )
        else:
            self.aug_mlp = None
        if cfg.num_classes:
            self.label_emb = tagged_param((cfg.num_classes + 1, emb_dim), "normal", 1.0)
        else:
            self.label_emb = None

        self.conv_in = SpaceConv(cfg.in_channels, base, rngs=None, dtype=dt)
        skips, ch = [base], base
        down, up = [], []
        last = len(cfg.channel_mults) - 1
        for level, (mult, res) in enumerate(zip(cfg.channel_mults, cfg.resolutions, strict=True)):
            for _ in range(cfg.num_res_blocks):
                down.append(self._block(ch, base * mult, res))
                ch = base * mult
                skips.append(ch)
            if level != last:
                down.append(Resample(ch, up=False, rngs=None, dtype=dt))
                skips.append(ch)
        self.mid = nnx.List(
            [
                UNetBlock(
                    ch,
                    ch,
                    cfg,
                    spatial=cfg.mid_attention,
                    temporal=cfg.mid_attention and cfg.temporal_mixing == "attention",
                    rngs=None,
                ),
                self._block(ch, ch, -1),
            ]
        )
        for level in reversed(range(len(cfg.channel_mults))):
            mult, res = cfg.channel_mults[level], cfg.resolutions[level]
            for _ in range(cfg.num_res_blocks + 1):
                up.append(self._block(ch + skips.pop(), base * mult, res))
                ch = base * mult
            if level != 0:
                up.append(Resample(ch, up=True, rngs=None, dtype=dt))
        self.down, self.up = nnx.List(down), nnx.List(up)
        self.norm_out = GroupNorm(ch, cfg.norm_groups, dtype=dt)
        self.conv_out = SpaceConv(ch, cfg.out_channels, rngs=None, dtype=dt, zero_init=True)
        init_params(self, rngs)  # every submodule above was built uninitialised (rngs=None)

    def _block(self, cin: int, cout: int, res: int) -> UNetBlock:
        spatial = res in self.cfg.attn_resolutions
        temporal = res in self.cfg.temporal_attn
        return UNetBlock(cin, cout, self.cfg, spatial=spatial, temporal=temporal, rngs=None)

    def _embed(self, logsnr, label, aug_logsnr, batch: int) -> jax.Array:
        """[B, E], or [B, T, E] when labels are per frame [B, T] (images in a joint batch)."""
        cfg = self.cfg
        logsnr = jnp.broadcast_to(jnp.asarray(logsnr, jnp.float32), (batch,))
        feats = sinusoidal_embedding(logsnr_to_unit(logsnr), cfg.base_channels)
        emb = self.logsnr_mlp[1](nnx.swish(self.logsnr_mlp[0](feats)))
        if self.aug_mlp is not None:
            aug = jnp.broadcast_to(jnp.asarray(aug_logsnr, jnp.float32), (batch,))
            feats = sinusoidal_embedding(logsnr_to_unit(aug), cfg.base_channels)
            emb = emb + self.aug_mlp[1](nnx.swish(self.aug_mlp[0](feats)))
        if self.label_emb is not None:
            if label is None:  # unconditional call: the null class
                label = jnp.full((batch,), cfg.num_classes, jnp.int32)
            label = jnp.asarray(label, jnp.int32)
            if label.ndim == 2:  # per frame: broadcast the clip's embedding over time
                emb = emb[:, None, :]
            emb = emb + jnp.take(self.label_emb[...], label, axis=0)
        return nnx.swish(emb).astype(jnp.dtype(cfg.dtype))

    def _run(self, block, *args):
        if self.cfg.remat:
            return nnx.remat(lambda mod, *a: mod(*a))(block, *args)
        return block(*args)

    def __call__(
        self,
        x: jax.Array,
        logsnr: jax.Array,
        *,
        label: jax.Array | None = None,
        aug_logsnr: jax.Array | None = None,
        image_mask: jax.Array | None = None,
        deterministic: bool = True,
        dropout_rng: jax.Array | None = None,
    ) -> jax.Array:
        """Predict from x [B, T, H, W, in_channels] at log-SNR [B] -> float32 [B, T, H, W, out].

        label int [B] (class ids; num_classes = null) or per frame [B, T] (a joint
        image-video batch: each independent image has its own label), aug_logsnr [B]
        (noise-augmentation level, needs cfg.use_aug_cond), image_mask bool [B, T] (True =
        independent image frame: no temporal link to other frames), dropout_rng (needed
        when deterministic=False and cfg.dropout > 0).
        """
        cfg = self.cfg
        if x.ndim != 5:
            raise ValueError(f"UNet3D expects x [B, T, H, W, C], got shape {x.shape}")
        b, t, h, w, c = x.shape
        # Any size the down path divides works: attention carries no positional table, so
        # spatial SR can train on crops and sample whole frames (image_size names the levels).
        multiple = 2 ** (len(cfg.channel_mults) - 1)
        size_ok = h % multiple == 0 and w % multiple == 0
        if c != cfg.in_channels or not size_ok:
            raise ValueError(
                f"UNet3D needs x [B, T, H, W, {cfg.in_channels}] with H, W divisible by "
                f"{multiple} (2 ** (levels - 1)); got x shape {x.shape}"
            )
        if image_mask is not None and tuple(image_mask.shape) != (b, t):
            raise ValueError(f"image_mask must be [B, T] = {(b, t)}, got {image_mask.shape}")
        if cfg.use_aug_cond and aug_logsnr is None:
            raise ValueError("UNet3D: cfg.use_aug_cond=True needs aug_logsnr [B]")
        if not cfg.use_aug_cond and aug_logsnr is not None:
            raise ValueError("UNet3D: aug_logsnr given but cfg.use_aug_cond=False")
        if not cfg.num_classes and label is not None:
            raise ValueError("UNet3D: label given but cfg.num_classes=0 (unconditional)")
        if label is not None and jnp.ndim(label) == 2 and tuple(jnp.shape(label)) != (b, t):
            raise ValueError(
                f"UNet3D: per-frame label must be [B, T] = {(b, t)}, got {label.shape}"
            )
        rng = None
        if not deterministic and cfg.dropout > 0:
            if dropout_rng is None:
                raise ValueError("UNet3D: deterministic=False with dropout > 0 needs dropout_rng")
            rng = dropout_rng

        emb = self._embed(logsnr, label, aug_logsnr, b)
        links = None if cfg.temporal_mixing in ("attention", "none") else temporal_links(image_mask)
        counter = itertools.count()  # one dropout key per block, in call order

        def block(mod, hidden):
            key = None if rng is None else jax.random.fold_in(rng, next(counter))
            return self._run(mod, hidden, emb, links, image_mask, key)

        hidden = self.conv_in(x.astype(jnp.dtype(cfg.dtype)))
        skips = [hidden]
        for mod in self.down:
            hidden = mod(hidden) if isinstance(mod, Resample) else block(mod, hidden)
            skips.append(hidden)
        for mod in self.mid:
            hidden = block(mod, hidden)
        for mod in self.up:
            if isinstance(mod, Resample):
                hidden = mod(hidden)
            else:
                hidden = block(mod, jnp.concatenate([hidden, skips.pop()], axis=-1))
        out = self.conv_out(nnx.swish(self.norm_out(hidden)))
        return out.astype(jnp.float32)
