"""Building blocks of the video U-Net, written for speed on CPU as well as accelerators.

Parameter initialisation (`tagged_param`, `init_params`), `Dense`, per-frame `GroupNorm`,
the space / temporal / 3D convolutions and the conditioned `ResBlock`; the attention layers
are in `cascade.models.attention`, stateless ops shared with the DiT and VAE in
`cascade.models.ops`.

Every video tensor is `[B, T, H, W, C]`. Spatial operations (space-only 1x3x3 convs,
group norm, spatial attention) fold time into batch and run as 2D NHWC ops: XLA's
2D convolution is 2-3x faster than its 5D one on CPU, and per-frame statistics keep
frames independent (what joint image-video training needs). Temporal operations build
their time neighbourhood by shifting frames onto the channel axis, so a 3x3x3 conv is
one 2D conv over 3C input channels and a temporal conv is one matmul; the same shift
lets an `image_mask` cut every link to an independent image frame exactly.

Initialisation: every layer takes `rngs: nnx.Rngs | None`. With rngs it initialises itself;
composite modules build their children with `rngs=None` (tagged zeros) and fill the whole
tree at once with `init_params`, so a model costs two random draws, not one per parameter.

Parameters are float32; `dtype` is the compute dtype (activations and kernels are cast
at use, normalisation statistics and softmax stay in float32).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from cascade.models.ops import add_bias, conv2d_nhwc, dropout


def logsnr_to_unit(logsnr: jax.Array) -> jax.Array:
    """Map log-SNR to the cosine-schedule time in (0, 1): t = atan(exp(-lambda/2)) / (pi/2).

    Bounded and monotone, so Fourier features of it are well scaled for any log-SNR.
    """
    logsnr = jnp.clip(jnp.asarray(logsnr, jnp.float32), -20.0, 20.0)
    return jnp.arctan(jnp.exp(-0.5 * logsnr)) / (0.5 * math.pi)


def tagged_param(shape: tuple[int, ...], init: str = "zeros", scale: float = 0.0) -> nnx.Param:
    """A float32 Param of zeros tagged with how `init_params` fills it.

    init "uniform": U(-scale, scale); "normal": N(0, scale^2); "zeros": stays zero.
    """
    value = jnp.zeros(shape, jnp.float32)
    return nnx.Param(value) if init == "zeros" else nnx.Param(value, init=(init, float(scale)))


def fan_in_param(shape: tuple[int, ...], fan_in: int, zero: bool = False) -> nnx.Param:
    """Variance-scaling (fan-in, uniform) kernel: keeps activations O(1) through swish nets."""
    if zero:
        return tagged_param(shape)
    return tagged_param(shape, "uniform", math.sqrt(3.0 / fan_in))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _draw(key: jax.Array, shapes: tuple, specs: tuple) -> list[jax.Array]:
    """One uniform and one normal draw, sliced and scaled into arrays of `shapes`."""
    out = [None] * len(shapes)
    for kind, sub in (("uniform", 0), ("normal", 1)):
        idx = [i for i, (k, _) in enumerate(specs) if k == kind]
        total = sum(math.prod(shapes[i]) for i in idx)
        if not total:
            continue
        k = jax.random.fold_in(key, sub)
        flat = (
            jax.random.uniform(k, (total,), jnp.float32, -1.0, 1.0)
            if kind == "uniform"
            else jax.random.normal(k, (total,), jnp.float32)
        )
        offset = 0
        for i in idx:
            size = math.prod(shapes[i])
            out[i] = specs[i][1] * flat[offset : offset + size].reshape(shapes[i])
            offset += size
    return out


def init_params(module: nnx.Module, rngs: nnx.Rngs) -> None:
    """Fill every tagged Param of `module` (see `tagged_param`) from one key, in place.

    A whole model is drawn with two random calls instead of one per parameter: XLA:CPU
    compiles each threefry draw separately (~0.1-0.3 s each), which made initialising a
    U-Net take a minute.
    """
    params = [
        v
        for _, v in nnx.iter_graph(module)
        if isinstance(v, nnx.Param) and "init" in v.get_metadata()
    ]
    if not params:
        return
    shapes = tuple(tuple(v.shape) for v in params)
    specs = tuple(v.get_metadata()["init"] for v in params)
    for var, value in zip(params, _draw(rngs.params(), shapes, specs), strict=True):
        var[...] = value


class Dense(nnx.Module):
    """Linear map over the last axis: [..., in] -> [..., out]."""

    def __init__(
        self,
        din: int,
        dout: int,
        *,
        rngs: nnx.Rngs | None,
        dtype: str = "float32",
        zero_init: bool = False,
    ):
        self.kernel = fan_in_param((din, dout), din, zero_init)
        self.bias = nnx.Param(jnp.zeros((dout,), jnp.float32))
        self.dtype = jnp.dtype(dtype)
        if rngs is not None:
            init_params(self, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # A 2D [rows, in] matmul: XLA:CPU runs its backward ~3x faster than a 5D dot_general.
        kernel = self.kernel[...].astype(self.dtype)
        y = jnp.dot(x.astype(self.dtype).reshape(-1, x.shape[-1]), kernel)
        return add_bias(y, self.bias[...]).reshape(*x.shape[:-1], kernel.shape[-1])


class GroupNorm(nnx.Module):
    """Per-frame group norm of [B, T, H, W, C]: statistics over (H, W, C/groups) in float32.

    Per-frame (not per-clip) statistics keep frames independent, so independent image
    frames in a joint image-video batch never influence video frames through the norm.
    """

    def __init__(self, channels: int, groups: int, *, eps: float = 1e-6, dtype: str = "float32"):
        if channels % groups:
            raise ValueError(f"GroupNorm: channels {channels} not divisible by groups {groups}")
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
        self.groups, self.eps, self.dtype = groups, eps, jnp.dtype(dtype)

    def __call__(
        self, x: jax.Array, scale: jax.Array | None = None, shift: jax.Array | None = None
    ) -> jax.Array:
        """x [B, T, H, W, C] -> same; optional FiLM scale, shift [B, C] or per frame [B, T, C]:
        y * (1 + scale) + shift."""
        *lead, h, w, c = x.shape
        g = self.groups
        # Per-channel moments over the contiguous H*W axis first, then per group: XLA:CPU
        # reduces this layout ~10x faster (forward + backward) than reducing over
        # (H, W, C/groups) of a [.., H, W, groups, C/groups] view.
        xf = x.astype(jnp.float32).reshape(*lead, h * w, c)
        m1 = jnp.mean(xf, axis=-2).reshape(*lead, g, c // g).mean(-1)
        m2 = jnp.mean(jnp.square(xf), axis=-2).reshape(*lead, g, c // g).mean(-1)
        inv = lax.rsqrt(jnp.maximum(m2 - jnp.square(m1), 0.0) + self.eps)
        # Fold normalisation and affine into one per-(frame, channel) scale and shift.
        a = jnp.repeat(inv, c // g, axis=-1) * self.scale[...]
        b = self.bias[...] - jnp.repeat(m1, c // g, axis=-1) * a
        if scale is not None:  # FiLM folded into the same per-(frame, channel) affine map
            film, shift = 1.0 + scale.astype(jnp.float32), shift.astype(jnp.float32)
            if film.ndim < a.ndim:  # one scale/shift per clip: the same on every frame
                film, shift = film[:, None, :], shift[:, None, :]
            a, b = a * film, b * film + shift
        y = x.astype(jnp.float32) * a[..., None, None, :] + b[..., None, None, :]
        return y.astype(self.dtype)


class SpaceConv(nnx.Module):
    """Space-only (1 x k x k) convolution of [B, T, H, W, C]: a 2D NHWC conv on [B*T, H, W, C].

    `stride=2` halves H and W (padding 1 each side, so even sizes halve exactly).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        rngs: nnx.Rngs | None,
        kernel_size: int = 3,
        stride: int = 1,
        dtype: str = "float32",
        zero_init: bool = False,
    ):
        k = kernel_size
        self.kernel = fan_in_param((k, k, cin, cout), k * k * cin, zero_init)
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
        self.stride, self.dtype = stride, jnp.dtype(dtype)
        if rngs is not None:
            init_params(self, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        k = self.kernel.shape[0]
        pad = ((k // 2, k // 2), (k // 2, k // 2))
        y = conv2d_nhwc(
            x.astype(self.dtype).reshape(b * t, h, w, c),
            self.kernel[...].astype(self.dtype),
            self.stride,
            pad,
        )
        y = add_bias(y, self.bias[...])
        return y.reshape(b, t, *y.shape[1:])


def temporal_links(image_mask: jax.Array | None) -> tuple[jax.Array, jax.Array] | None:
    """Which frame pairs (t-1, t) are linked: None (all) or ([B, T] prev_ok, [B, T] next_ok).

    A link between neighbouring frames exists only if neither is an image frame.
    """
    if image_mask is None:
        return None
    video = ~image_mask.astype(bool)
    pair = video[:, 1:] & video[:, :-1]  # [B, T-1]: frames t and t+1 are both video frames
    false = jnp.zeros_like(video[:, :1])
    prev_ok = jnp.concatenate([false, pair], axis=1)  # frame t may read t-1
    next_ok = jnp.concatenate([pair, false], axis=1)  # frame t may read t+1
    return prev_ok, next_ok


def shift_frames(x: jax.Array, links: tuple[jax.Array, jax.Array] | None) -> jax.Array:
    """[B, T, H, W, C] -> [B, T, H, W, 3C] = (x[t-1], x[t], x[t+1]) with zero padding in time.

    With `links` (from `temporal_links`) a neighbour is zeroed where the link is cut.
    """
    zero = jnp.zeros_like(x[:, :1])
    prev = jnp.concatenate([zero, x[:, :-1]], axis=1)
    nxt = jnp.concatenate([x[:, 1:], zero], axis=1)
    if links is not None:
        prev_ok, next_ok = links
        prev = jnp.where(prev_ok[:, :, None, None, None], prev, 0)
        nxt = jnp.where(next_ok[:, :, None, None, None], nxt, 0)
    return jnp.concatenate([prev, x, nxt], axis=-1)


def shift_add_frames(z: jax.Array, links: tuple[jax.Array, jax.Array] | None) -> jax.Array:
    """[B, T, ..., 3, C] -> [B, T, ..., C]: z[t-1, 0] + z[t, 1] + z[t+1, 2], zero past the ends.

    z holds a temporal kernel's three taps applied to every frame (tap 0 reads the previous
    frame, tap 2 the next); shifting these outputs into place equals convolving in time, and
    costs one pass over the outputs where stacking the shifted inputs on channels
    (`shift_frames`) costs three copies of the input: 1.2-2.4x faster for a temporal conv's
    forward and backward on CPU. (Not for `Conv3D`, whose 2D conv then has 3x the outputs and
    1/3 the inputs: 0.91-1.07x, so it keeps the stacked inputs.)
    With `links` (from `temporal_links`) a neighbour's tap adds nothing where the link is cut.
    """
    pad = [(0, 0)] * (z.ndim - 3)
    prev = jnp.pad(z[:, :-1, ..., 0, :], [(0, 0), (1, 0), *pad])  # frame t reads t-1
    nxt = jnp.pad(z[:, 1:, ..., 2, :], [(0, 0), (0, 1), *pad])  # frame t reads t+1
    if links is not None:
        prev_ok, next_ok = (ok.reshape(ok.shape + (1,) * (z.ndim - 3)) for ok in links)
        prev = jnp.where(prev_ok, prev, 0)
        nxt = jnp.where(next_ok, nxt, 0)
    return prev + z[..., 1, :] + nxt


class TemporalConv(nnx.Module):
    """Temporal (3 x 1 x 1) convolution of [B, T, H, W, C]: one matmul to the three taps'
    outputs, shifted into place (`shift_add_frames`)."""

    def __init__(
        self, cin: int, cout: int, *, rngs: nnx.Rngs | None, dtype="float32", zero_init=False
    ):
        self.kernel = fan_in_param((3, cin, cout), 3 * cin, zero_init)
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
        self.dtype = jnp.dtype(dtype)
        if rngs is not None:
            init_params(self, rngs)

    def __call__(self, x: jax.Array, links=None) -> jax.Array:
        kt, cin, cout = self.kernel.shape
        # (kt, I, O) -> (I, kt*O): every tap's output channels side by side.
        kernel = jnp.transpose(self.kernel[...], (1, 0, 2)).reshape(cin, kt * cout)
        z = jnp.dot(x.astype(self.dtype).reshape(-1, cin), kernel.astype(self.dtype))
        y = shift_add_frames(z.reshape(*x.shape[:-1], kt, cout), links)
        return add_bias(y, self.bias[...])


class Conv3D(nnx.Module):
    """Full 3x3x3 convolution of [B, T, H, W, C], 'same' padding.

    Computed as a 2D 3x3 conv over the time-shifted stack [x[t-1], x[t], x[t+1]] (3C
    channels): mathematically identical to the 5D conv and 2-3x faster on CPU.
    Kernel layout is (kt, kh, kw, Cin, Cout), as lax's DHWIO.
    """

    def __init__(
        self, cin: int, cout: int, *, rngs: nnx.Rngs | None, dtype="float32", zero_init=False
    ):
        self.kernel = fan_in_param((3, 3, 3, cin, cout), 27 * cin, zero_init)
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
        self.dtype = jnp.dtype(dtype)
        if rngs is not None:
            init_params(self, rngs)

    def __call__(self, x: jax.Array, links=None) -> jax.Array:
        b, t, h, w, c = x.shape
        xs = shift_frames(x.astype(self.dtype), links).reshape(b * t, h, w, 3 * c)
        kt, kh, kw, cin, cout = self.kernel.shape
        # (kt, kh, kw, I, O) -> (kh, kw, kt*I, O), matching the channel order of shift_frames.
        kernel = jnp.transpose(self.kernel[...], (1, 2, 0, 3, 4)).reshape(kh, kw, kt * cin, cout)
        y = conv2d_nhwc(xs, kernel.astype(self.dtype), 1, ((1, 1), (1, 1)))
        return add_bias(y, self.bias[...]).reshape(b, t, h, w, cout)


class ResBlock(nnx.Module):
    """Residual block conditioned on an embedding [B, E] (added, or FiLM scale/shift).

    norm -> swish -> conv -> (+emb | *(1+scale)+shift after norm) -> norm -> swish ->
    dropout -> conv (zero init), plus a 1x1 skip when channels change. `conv` is
    "space" (1x3x3), "space+temporal" (1x3x3 then a residual 3x1x1) or "3d" (3x3x3).

    Not the VAE's `causal_blocks.CausalResBlock`: this one is conditioned (time/class
    embedding), uses per-frame GroupNorm and centred time padding cut by `image_mask`, has
    dropout and a zero-initialised output conv, whereas the VAE block is unconditioned, RMS-
    normed and causal with a chunk-streaming cache; only the ops underneath are shared.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        emb_dim: int,
        *,
        groups: int,
        conv: str,
        scale_shift: bool,
        dropout: float,
        rngs: nnx.Rngs | None,
        dtype: str = "float32",
    ):
        if conv not in ("space", "space+temporal", "3d"):
            raise ValueError(f"ResBlock conv must be space, space+temporal or 3d, got {conv!r}")
        make = Conv3D if conv == "3d" else SpaceConv
        self.norm1 = GroupNorm(cin, groups, dtype=dtype)
        self.conv1 = make(cin, cout, rngs=None, dtype=dtype)
        self.emb = Dense(emb_dim, 2 * cout if scale_shift else cout, rngs=None, dtype=dtype)
        self.norm2 = GroupNorm(cout, groups, dtype=dtype)
        self.conv2 = make(cout, cout, rngs=None, dtype=dtype, zero_init=True)
        if conv == "space+temporal":
            # (2+1)D factorisation: each space conv followed by a residual temporal conv,
            # zero-initialised so the block starts as its per-frame 2D counterpart.
            self.tconv1 = TemporalConv(cout, cout, rngs=None, dtype=dtype, zero_init=True)
            self.tconv2 = TemporalConv(cout, cout, rngs=None, dtype=dtype, zero_init=True)
        else:
            self.tconv1 = self.tconv2 = None
        self.skip = Dense(cin, cout, rngs=None, dtype=dtype) if cin != cout else None
        self.conv_kind, self.scale_shift, self.rate = conv, scale_shift, dropout
        if rngs is not None:
            init_params(self, rngs)

    def _conv(self, conv, tconv, h, links):
        if self.conv_kind == "3d":
            return conv(h, links)
        h = conv(h)
        if tconv is not None:
            h = h + tconv(h, links)
        return h

    def __call__(
        self,
        x: jax.Array,
        emb: jax.Array,
        links=None,
        dropout_rng: jax.Array | None = None,
    ) -> jax.Array:
        """x [B, T, H, W, Cin], emb [B, E] or per frame [B, T, E] (already swish-activated)
        -> [B, T, H, W, Cout]."""
        h = nnx.swish(self.norm1(x))
        h = self._conv(self.conv1, self.tconv1, h, links)
        e = self.emb(emb)  # [B, (T,) C] or [B, (T,) 2C]
        if self.scale_shift:
            scale, shift = jnp.split(e, 2, axis=-1)
            h = self.norm2(h, scale, shift)
        else:  # add on a [B, T*H*W, C] (or [B, T, H*W, C]) view: fast backward on CPU
            b, t, hh, ww, c = h.shape
            if e.ndim == 3:  # per-frame embedding (joint image-video batches)
                h = self.norm2((h.reshape(b, t, -1, c) + e[:, :, None, :]).reshape(h.shape))
            else:
                h = self.norm2((h.reshape(b, -1, c) + e[:, None, :]).reshape(h.shape))
        h = dropout(nnx.swish(h), self.rate, dropout_rng)
        h = self._conv(self.conv2, self.tconv2, h, links)
        skip = x if self.skip is None else self.skip(x)
        return skip.astype(h.dtype) + h
