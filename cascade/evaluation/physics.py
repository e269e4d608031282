"""Physical plausibility of bouncing_shapes videos (real or generated).

Pipeline, per clip:
1. Segment: every pixel goes to the nearest of {background, occluder grey, palette
   colours}; a pixel farther than `color_threshold` (RGB, 0-255) from all of them is
   background. Ground-truth frames are segmented exactly; generated frames approximately.
2. Observe: per frame and palette colour, the largest 8-connected component with at
   least `min_pixels` pixels is the object of that colour: its centroid, its shape (nearest
   template of (area / r^2, bounding-box fill) rendered by the builder's own rasteriser)
   and whether it is *clean* (touches neither the occluder nor another object, so its
   centroid is the true centre up to rasterisation). Further components of the same
   colour count as extra objects.
3. Track by colour (colours are distinct within a clip) and score (`physics_scoring`):
   (a) ballistic_rmse: RMS residual (px) of constant-gravity fits, y = c + v t + g t^2 / 2
       with the builder's g and x = c + v t, on runs of clean frames split wherever a
       bounce is possible (near the floor or a wall); gravity_estimate: g fitted freely.
   (b) teleports: steps longer than the fastest physically possible motion.
   (c) permanence_violations: objects that vanish in the open, never come back from
       behind the occluder (in time for their speed), appear from nowhere, or come back
       with another shape or colour.
   (d) color_changes (an object continues with another colour, in the open or behind
       the occluder) and shape_constancy (fraction of clean frames with the object's
       majority shape).
   (e) count_changes / count_stability: frames where the number of objects (visible or
       legitimately behind the occluder) changes.

Ground-truth clips score ballistic_rmse ~ 0.1-0.2 px (rasterisation), 0 teleports, 0
violations, 0 colour changes, shape constancy 1, count stability 1.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from cascade.data.builders import bouncing_shapes as bs
from cascade.evaluation import physics_scoring

_EIGHT = np.ones((3, 3), bool)


def to_rgb255(videos: np.ndarray) -> np.ndarray:
    """uint8, or float in [-1, 1], [B, T, H, W, 3] -> float32 in [0, 255]."""
    videos = np.asarray(videos)
    if videos.dtype == np.uint8:
        return videos.astype(np.float32)
    return (np.clip(videos.astype(np.float32), -1, 1) + 1.0) * 127.5


def segment(video: np.ndarray, color_threshold: float = 100.0) -> np.ndarray:
    """One clip [T, H, W, 3] (0-255) -> int8 labels [T, H, W]: palette index, -1 for
    background (or no colour within `color_threshold`), -2 for the occluder."""
    refs = np.concatenate([bs.PALETTE, bs.BACKGROUND[None], bs.OCCLUDER_COLOR[None]]).astype(
        np.float32
    )
    ids = np.concatenate([np.arange(len(bs.PALETTE)), [-1, -2]])
    x = video.reshape(-1, 3)
    labels = np.full(x.shape[0], -1, np.int64)
    # Fast path: pixels that are exactly a reference colour (all of a ground-truth frame).
    q = np.rint(x).astype(np.int64)
    keys = (q[:, 0] * 256 + q[:, 1]) * 256 + q[:, 2]
    ref_keys = (refs[:, 0].astype(np.int64) * 256 + refs[:, 1]) * 256 + refs[:, 2]
    order = np.argsort(ref_keys)
    pos = np.clip(np.searchsorted(ref_keys[order], keys), 0, len(refs) - 1)
    exact = (ref_keys[order][pos] == keys) & (np.abs(x - q) < 1e-3).all(-1)
    labels[exact] = ids[order][pos[exact]]
    rest = x[~exact].astype(np.float32)
    if rest.size:  # nearest reference colour, within the threshold
        d2 = (rest * rest).sum(1, keepdims=True) - 2.0 * rest @ refs.T + (refs * refs).sum(1)
        nearest = ids[d2.argmin(-1)]
        labels[~exact] = np.where(d2.min(-1) <= color_threshold**2, nearest, -1)
    return labels.reshape(video.shape[:-1]).astype(np.int8)


@functools.lru_cache(maxsize=8)
def shape_templates(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the (area / r^2, bbox fill) descriptor of each shape, measured on
    the builder's rasteriser at random sub-pixel positions: ([S, 2], [2])."""
    rng = np.random.default_rng(0)
    r = bs.scaled_constants(resolution)["radius"]
    centre = resolution / 2.0
    descriptors = []
    for sid in range(len(bs.SHAPES)):
        pos = rng.uniform(centre - 1, centre + 1, (64, 1, 2)).astype(np.float32)
        masks = bs.shape_masks(pos, np.array([sid]), resolution)[:, 0]
        descriptors.append(np.stack([_describe(m, r) for m in masks]))
    descriptors = np.stack(descriptors)  # [S, 64, 2]
    return descriptors.mean(1), descriptors.std(axis=(0, 1)) + 1e-6


def _describe(mask: np.ndarray, radius: float) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    area = rows.size
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    return np.array([area / radius**2, area / box])


def observe(labels: np.ndarray, min_pixels: int | None = None) -> dict[str, np.ndarray]:
    """Per-frame object observations of one segmented clip [T, H, W].

    Returns [T, P] arrays (P = palette size): present, clean, area, shape (-1 unknown),
    extra (number of further components), and centroid [T, P, 2] (y, x), NaN if absent.
    """
    t_len, res = labels.shape[0], labels.shape[1]
    r = bs.scaled_constants(res)["radius"]
    means, spread = shape_templates(res)
    if min_pixels is None:  # 30% of the smallest shape's area (the triangle's)
        min_pixels = max(2, int(0.3 * means[:, 0].min() * r**2))
    p_len = len(bs.PALETTE)
    out = {
        "present": np.zeros((t_len, p_len), bool),
        "clean": np.zeros((t_len, p_len), bool),
        "area": np.zeros((t_len, p_len), np.int64),
        "shape": np.full((t_len, p_len), -1, np.int64),
        "extra": np.zeros((t_len, p_len), np.int64),
        "centroid": np.full((t_len, p_len, 2), np.nan),
        "x_range": np.full((t_len, p_len, 2), np.nan),  # leftmost, rightmost column
    }
    for t in range(t_len):
        frame = labels[t]
        occluder_near = ndimage.binary_dilation(frame == -2, _EIGHT)
        for p in np.unique(frame[frame >= 0]):
            comps, n = ndimage.label(frame == p, _EIGHT)
            sizes = np.bincount(comps.ravel())[1:]
            big = np.flatnonzero(sizes >= min_pixels)
            if big.size == 0:
                continue
            main = comps == big[np.argmax(sizes[big])] + 1
            others_near = ndimage.binary_dilation((frame >= 0) & (frame != p), _EIGHT)
            rows, cols = np.nonzero(main)
            clean = not (occluder_near[main].any() or others_near[main].any())
            out["present"][t, p] = True
            out["clean"][t, p] = clean
            out["area"][t, p] = rows.size
            out["extra"][t, p] = big.size - 1
            out["centroid"][t, p] = rows.mean(), cols.mean()
            out["x_range"][t, p] = cols.min(), cols.max()
            if clean:
                d = (_describe(main, r) - means) / spread
                out["shape"][t, p] = int(np.argmin((d**2).sum(-1)))
    return out


def physics_metrics(
    videos: np.ndarray, *, color_threshold: float = 100.0, min_pixels: int | None = None
) -> dict[str, np.ndarray]:
    """Physics sub-metrics of bouncing_shapes videos [B, T, H, W, 3] (uint8 or [-1, 1]).

    Returns per-clip arrays [B]: ballistic_rmse (px, NaN when no fit), gravity_estimate
    (px/frame^2, NaN when no fit), teleports, permanence_violations, color_changes,
    shape_constancy (NaN when no clean frame), count_changes, count_stability,
    num_objects, empty_scene (1.0 where no object is found; that clip's teleports,
    permanence_violations, color_changes and count_stability are NaN: undefined, not a
    perfect score). Average with `aggregate.summarize` (NaN-aware).
    """
    videos = to_rgb255(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"expected RGB videos [B, T, H, W, 3], got {videos.shape}")
    rows = []
    for video in videos:
        obs = observe(segment(video, color_threshold), min_pixels)
        rows.append(physics_scoring.score_clip(obs, video.shape[1]))
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}
