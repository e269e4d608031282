"""moving_digits: Moving-MNIST-style clips made of real handwritten digits.

The digits are scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
download), upscaled with bicubic interpolation to a glyph of ~28/64 of the frame.
Each clip has 1 or 2 digits moving at a constant velocity and bouncing off the
walls (exact reflection); digits are composited with a pixel-wise max, as in
Moving MNIST. Train and test clips draw from disjoint sets of digit images.

Features (T = frames, R = resolution):
  video      uint8   [T, R, R, 1]
  label      int64   []        class (0-9) of the first digit
  digits     int64   [2]       class of each digit, -1 when absent
  positions  float32 [T, 2, 2] per-frame (y, x) ink centroid of each digit in pixel
                                coordinates (pixel (i, j) has centre (i, j)); zeros
                                when absent. It equals the intensity-weighted centroid
                                of the rendered digit whenever the digits do not overlap.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from cascade.data.builders.base import (
    PRESETS,
    ClipsConfig,
    ProceduralVideoBuilder,
    video_feature,
)

MAX_DIGITS = 2
NUM_CLASSES = 10
# Glyph side as a fraction of the frame (28 px on a 64 px frame, as in Moving MNIST).
GLYPH_FRACTION = 28 / 64
# Speed range in pixels per frame at 64x64; scaled with the resolution.
SPEED_RANGE = (2.0, 3.5)
REFERENCE_RESOLUTION = 64


def glyph_size(resolution: int) -> int:
    """Side of the square digit glyph, in pixels, for a frame of `resolution`."""
    return max(6, int(round(GLYPH_FRACTION * resolution)))


@functools.lru_cache(maxsize=8)
def glyphs(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All scikit-learn digits upscaled to `size`.

    Returns:
      images uint8 [N, size, size] (0..255), labels int64 [N], ink centroids
      float64 [N, 2] ((y, x) within the glyph).
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn, offline

    digits = load_digits()
    # One pixel of zero border so the bicubic kernel fades strokes that touch the edge.
    small = np.pad(digits.images.astype(np.float32), ((0, 0), (1, 1), (1, 1)))
    big = np.stack(
        [
            np.asarray(Image.fromarray(im, mode="F").resize((size, size), Image.BICUBIC))
            for im in small
        ]
    )
    images = np.clip(np.rint(big * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    w = images.astype(np.float64)
    grid = np.arange(size, dtype=np.float64)
    mass = w.sum(axis=(1, 2))
    cy = (w.sum(axis=2) * grid).sum(axis=1) / mass
    cx = (w.sum(axis=1) * grid).sum(axis=1) / mass
    return images, digits.target.astype(np.int64), np.stack([cy, cx], axis=1)


def split_pool(split: str, num_images: int) -> np.ndarray:
    """Indices of the digit images a split draws from (every 5th image is test-only)."""
    idx = np.arange(num_images)
    return idx[idx % 5 == 0] if split == "test" else idx[idx % 5 != 0]


def reflect(p: np.ndarray, limit: float) -> np.ndarray:
    """Folds unbounded positions into [0, limit]: exact elastic bounces off both walls."""
    m = np.mod(p, 2.0 * limit)
    return np.where(m > limit, 2.0 * limit - m, m)


def render_clip(
    rng: np.random.Generator, frames: int, resolution: int, split: str
) -> dict[str, Any]:
    """Draws and renders one clip (see the module docstring for the features)."""
    images, labels, centroids = glyphs(glyph_size(resolution))
    size = images.shape[1]
    limit = float(resolution - size)
    pool = split_pool(split, len(images))
    n = int(rng.integers(1, MAX_DIGITS + 1))
    ids = rng.choice(pool, size=n, replace=False)
    start = rng.uniform(0.0, limit, size=(n, 2))
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    scale = resolution / REFERENCE_RESOLUTION
    speed = rng.uniform(*SPEED_RANGE, size=n) * scale
    velocity = np.stack([np.sin(angle), np.cos(angle)], axis=1) * speed[:, None]

    t = np.arange(frames, dtype=np.float64)
    # Top-left corner of each glyph per frame: [n, T, 2] integers.
    corner = np.rint(reflect(start[:, None, :] + velocity[:, None, :] * t[None, :, None], limit))
    corner = corner.astype(np.int64)

    canvas = np.zeros((frames, resolution, resolution), np.uint8)
    offs = np.arange(size)
    for d in range(n):
        rows = corner[d, :, 0][:, None, None] + offs[None, :, None]  # [T, S, 1]
        cols = corner[d, :, 1][:, None, None] + offs[None, None, :]  # [T, 1, S]
        tt = np.arange(frames)[:, None, None]
        canvas[tt, rows, cols] = np.maximum(canvas[tt, rows, cols], images[ids[d]][None])

    positions = np.zeros((frames, MAX_DIGITS, 2), np.float32)
    positions[:, :n] = (corner + centroids[ids][:, None, :]).transpose(1, 0, 2)
    digits = np.full((MAX_DIGITS,), -1, np.int64)
    digits[:n] = labels[ids]
    return {
        "video": canvas[..., None],
        "label": np.int64(digits[0]),
        "digits": digits,
        "positions": positions,
    }


class MovingDigits(ProceduralVideoBuilder):
    """Moving-MNIST-style clips of scikit-learn handwritten digits (offline)."""

    BUILDER_CONFIGS = PRESETS
    DEFAULT_BUILDER_CONFIG_NAME = "default"
    DESCRIPTION = __doc__
    MIN_RESOLUTION = 16

    def _features(self, cfg: ClipsConfig) -> dict[str, Any]:
        t, r = int(cfg.frames), int(cfg.resolution)
        return {
            "video": video_feature(t, r, 1),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "digits": tfds.features.Tensor(shape=(MAX_DIGITS,), dtype=np.int64),
            "positions": tfds.features.Tensor(shape=(t, MAX_DIGITS, 2), dtype=np.float32),
        }

    def _render_chunk(
        self, rngs: list[np.random.Generator], cfg: ClipsConfig, split: str
    ) -> list[dict[str, Any]]:
        return [render_clip(rng, int(cfg.frames), int(cfg.resolution), split) for rng in rngs]
