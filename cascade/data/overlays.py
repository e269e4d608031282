"""Ground-truth states of the embedded data sets drawn over their frames: where each object
is (`positions` of moving_digits, `states.position` of bouncing_shapes), where it is going
(`states.velocity`) and whether it is seen or hidden behind the occluder (`states.visible`).
For looking at data; nothing trains on these pictures."""

from __future__ import annotations

from typing import Any

import numpy as np

from cascade.video_io import to_uint8

MARKER_COLORS = np.array(  # one per object slot; none is the grey occluder or black background
    [[255, 64, 64], [64, 160, 255], [255, 220, 0], [0, 220, 120]], np.uint8
)


def draw_states(
    video: Any,
    position: Any,
    velocity: Any | None = None,
    visible: Any | None = None,
    present: Any | None = None,
    *,
    scale: int = 4,
) -> np.ndarray:
    """Ground-truth object states drawn over a clip (for looking at data, not for models).

    Args:
      video: [T, H, W, C] float in [-1, 1] or uint8.
      position: [T, K, 2] (y, x) per object in pixels of the stored frames (pixel (i, j) has
        centre (i, j)), e.g. a data set's `positions` / `states.position`.
      velocity: [T, K, 2] (vy, vx) pixels per frame, drawn as a line from the marker's edge to
        where the object would be one frame later; None: no lines.
      visible: bool [T, K]; a visible object gets a filled dot, a hidden one (behind the
        occluder) a hollow box; None: all visible.
      present: bool [K]; absent object slots are not drawn; None: all present.
      scale: nearest-neighbour upscaling before drawing (markers are a few pixels wide).
    Returns:
      uint8 RGB [T, H * scale, W * scale, 3]; object k's markers in MARKER_COLORS[k % 4].
    """
    frames = to_uint8(video)
    if frames.ndim != 4:
        raise ValueError(f"Expected a video [T, H, W, C], got shape {np.shape(video)}.")
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    position = np.asarray(position, np.float32)
    t, k = position.shape[:2]
    if frames.shape[0] != t or position.shape[2:] != (2,):
        raise ValueError(
            f"position has shape {position.shape}; expected [{frames.shape[0]}, K, 2] for a "
            f"video of {frames.shape[0]} frames."
        )
    visible = np.ones((t, k), bool) if visible is None else np.asarray(visible, bool)
    present = np.ones((k,), bool) if present is None else np.asarray(present, bool)
    height, width = frames.shape[1:3]
    centre = (position + 0.5) * scale  # upscaled pixel i covers [i * scale, (i + 1) * scale)
    r = max(scale // 2, 1)

    def put(f: int, ys: np.ndarray, xs: np.ndarray, color: np.ndarray) -> None:
        ys, xs = np.floor(ys).astype(int), np.floor(xs).astype(int)
        inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        frames[f, ys[inside], xs[inside]] = color

    offsets = np.arange(-r, r + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))
    ring = (np.abs(dy) == r) | (np.abs(dx) == r)
    for f in range(t):
        for j in np.flatnonzero(present):
            color = MARKER_COLORS[j % len(MARKER_COLORS)]
            y, x = centre[f, j]
            if velocity is not None:
                vy, vx = np.asarray(velocity, np.float32)[f, j] * scale
                steps = np.linspace(0.0, 1.0, int(np.hypot(vy, vx)) + 2)
                steps = steps[
                    steps * np.hypot(vy, vx) > r
                ]  # outside the marker: hidden stays hollow
                put(f, y + steps * vy, x + steps * vx, color)
            keep = np.ones_like(ring) if visible[f, j] else ring
            put(f, y + dy[keep], x + dx[keep], color)
    return frames
