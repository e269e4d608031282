"""Frame metrics against ground truth: PSNR and SSIM, per frame and per clip.

Used for super-resolution stages, the video VAE and conditional generation, where a
generated clip has a pixel-aligned target.

Value range. PSNR depends only on differences, so `psnr` works on any range given its
`data_range` (2.0 for [-1, 1]). SSIM's luminance term (2 mu_x mu_y + C1) / (mu_x^2 +
mu_y^2 + C1) is *not* shift-invariant: it assumes non-negative intensities, and
[-1, 1] data gives different (and incomparable) numbers than the same frames in
[0, 1]. So `ssim` takes non-negative images ([0, 1] with data_range 1, or uint8 with
255), and `frame_metrics` maps the project's [-1, 1] videos to [0, 1] first; its
numbers equal `tf.image.ssim` / `skimage` (Gaussian) on [0, 1] frames.

SSIM follows Wang et al. 2004 (and `tf.image.ssim`): 11 x 11 Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, statistics over the VALID window positions only (no
padding), population (not sample) variances, averaged over positions and then
channels. Frames must be at least 11 x 11.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# The PSNR of an exact 8-bit frame: the clips are stored as uint8, so "identical" means an
# error below the quantization step, whose uniform noise has variance 1/12 LSB^2. Averages of
# per-frame PSNR over clips cap at it instead of turning +inf (and unrankable) on one
# static clip: 10 log10(12 * 255^2) = 58.92 dB.
UINT8_PSNR_CEILING = float(10.0 * np.log10(12.0 * 255.0**2))


def psnr(pred: jax.Array, target: jax.Array, *, data_range: float = 2.0) -> jax.Array:
    """Peak signal-to-noise ratio in dB over the last three axes [..., H, W, C] -> [...].

    `10 log10(data_range^2 / MSE)`; +inf where the images are identical.
    """
    pred, target = _check(pred, target)
    mse = jnp.mean((pred - target) ** 2, axis=(-3, -2, -1))
    return 10.0 * jnp.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian of `size` taps centred on the middle tap."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


@functools.partial(
    jax.jit, static_argnames=("data_range", "window", "sigma", "k1", "k2", "return_map")
)
def ssim(
    pred: jax.Array,
    target: jax.Array,
    *,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    return_map: bool = False,
) -> jax.Array:
    """Structural similarity over the last three axes [..., H, W, C] -> [...].

    Images must be non-negative intensities ([0, 1] with data_range 1; uint8 with 255).
    With `return_map=True`, returns the SSIM map [..., H - window + 1, W - window + 1, C].
    """
    pred, target = _check(pred, target)
    *lead, h, w, c = pred.shape
    if h < window or w < window:
        raise ValueError(f"SSIM with an {window}x{window} window needs frames >= that, got {h}x{w}")

    # Channels and leading axes become one batch of single-channel images [N, H, W, 1].
    def to_images(x: jax.Array) -> jax.Array:
        x = jnp.moveaxis(x.reshape(-1, h, w, c), -1, 1)
        return x.reshape(-1, h, w, 1)

    x, y = to_images(pred), to_images(target)
    g = jnp.asarray(gaussian_window(window, sigma), jnp.float32)

    def blur(img: jax.Array) -> jax.Array:  # separable VALID Gaussian filter
        dn = ("NHWC", "HWIO", "NHWC")
        precision = jax.lax.Precision.HIGHEST
        img = jax.lax.conv_general_dilated(
            img,
            g.reshape(window, 1, 1, 1),
            (1, 1),
            "VALID",
            dimension_numbers=dn,
            precision=precision,
        )
        return jax.lax.conv_general_dilated(
            img,
            g.reshape(1, window, 1, 1),
            (1, 1),
            "VALID",
            dimension_numbers=dn,
            precision=precision,
        )

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    hv, wv = ssim_map.shape[1:3]
    ssim_map = jnp.moveaxis(ssim_map.reshape(-1, c, hv, wv), 1, -1).reshape(*lead, hv, wv, c)
    if return_map:
        return ssim_map
    return ssim_map.mean(axis=(-3, -2, -1))


def frame_metrics(
    pred: jax.Array, target: jax.Array, *, value_range: tuple[float, float] = (-1.0, 1.0)
) -> dict[str, jax.Array]:
    """PSNR and SSIM of videos [B, T, H, W, C] against ground truth, both mapped from
    `value_range` to [0, 1] (data range 1) first.

    Returns:
      psnr_frame, ssim_frame: [B, T] per frame.
      psnr_clip, ssim_clip: [B], the mean over frames of the per-frame value (the
        usual video-SR convention; identical frames give +inf PSNR, which propagates).
      psnr, ssim: scalars, mean over clips.
    """
    if pred.ndim != 5:
        raise ValueError(f"frame_metrics expects videos [B, T, H, W, C], got {pred.shape}")
    lo, hi = value_range
    pred, target = _check(pred, target)
    pred = jnp.clip((pred - lo) / (hi - lo), 0.0, 1.0)
    target = jnp.clip((target - lo) / (hi - lo), 0.0, 1.0)
    psnr_frame = psnr(pred, target, data_range=1.0)
    ssim_frame = ssim(pred, target, data_range=1.0)
    psnr_clip, ssim_clip = psnr_frame.mean(axis=1), ssim_frame.mean(axis=1)
    return {
        "psnr_frame": psnr_frame,
        "ssim_frame": ssim_frame,
        "psnr_clip": psnr_clip,
        "ssim_clip": ssim_clip,
        "psnr": psnr_clip.mean(),
        "ssim": ssim_clip.mean(),
    }


def _check(pred: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    if pred.ndim < 3:
        raise ValueError(f"expected [..., H, W, C], got {pred.shape}")
    return jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32)
