"""bouncing_shapes: coloured shapes under gravity, bouncing, passing behind an occluder.

Each clip has 1-3 objects (circle, square, triangle), each with its own colour
from `PALETTE` (distinct within a clip), falling under `GRAVITY`, bouncing off the
floor and the side walls with `RESTITUTION`, and passing behind a fixed grey bar
(`OCCLUDER`). Motion is integrated exactly between frames (ballistic arcs, exact
bounce times), so between bounces p[t+1] = p[t] + v[t] + (GRAVITY_px / 2, 0).
Shapes are drawn without anti-aliasing: every pixel is exactly the background,
the occluder or one palette colour, so an evaluation can segment objects by exact
colour. Later objects are drawn over earlier ones; the occluder is drawn last.

Coordinates are pixels with pixel (i, j) centred at (i, j); y grows downwards.
Physical constants are given at `REFERENCE_RESOLUTION` and scale linearly with the
resolution (`scaled_constants`).

Features (T = frames, R = resolution, K = MAX_OBJECTS):
  video   uint8 [T, R, R, 3]
  label   int64 []   shape id of object 0 (index into SHAPES)
  states:
    position  float32 [T, K, 2]  (y, x) centroid of the shape, pixels (0 when absent)
    velocity  float32 [T, K, 2]  (vy, vx) instantaneous velocity, pixels/frame
    visible   bool    [T, K]     present and at least one pixel not behind the occluder
    present   bool    [K]
    shape     int64   [K]        index into SHAPES, -1 when absent
    color     int64   [K]        index into PALETTE, -1 when absent
    occluder  float32 [4]        (y0, x0, y1, x1): rows y0..y1-1, columns x0..x1-1
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from cascade.data.builders.base import (
    PRESETS,
    ClipsConfig,
    ProceduralVideoBuilder,
    video_feature,
)

SHAPES = ("circle", "square", "triangle")
# Exact RGB per colour id; none equals BACKGROUND or OCCLUDER_COLOR.
PALETTE = np.array(
    [
        [255, 0, 0],  # red
        [0, 255, 0],  # green
        [0, 0, 255],  # blue
        [255, 255, 0],  # yellow
        [255, 0, 255],  # magenta
        [0, 255, 255],  # cyan
    ],
    dtype=np.uint8,
)
COLOR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")
BACKGROUND = np.array([0, 0, 0], dtype=np.uint8)
OCCLUDER_COLOR = np.array([128, 128, 128], dtype=np.uint8)
MAX_OBJECTS = 3

REFERENCE_RESOLUTION = 64
# At REFERENCE_RESOLUTION (pixels, frames); scaled by resolution / REFERENCE_RESOLUTION.
RADIUS = 4.0  # every shape fits in a disc of this radius around its centroid
MIN_RADIUS = 2.0  # floor at low resolutions: every shape then covers >= 1 pixel centre
GRAVITY = 0.25  # pixels / frame^2, downwards (+y)
RESTITUTION = 0.9  # speed kept at a bounce (floor and walls)
SPEED_X_RANGE = (0.8, 2.0)  # |vx| at t=0
SPEED_Y_RANGE = (-1.5, 1.0)  # vy at t=0
# Occluder as fractions of the frame (y0, x0, y1, x1): a full-height vertical bar,
# wide enough (12 px at 64) to hide a whole object for a few frames.
OCCLUDER = (0.0, 26 / 64, 1.0, 38 / 64)
# Square half-side: same area as the disc of radius RADIUS.
_SQUARE_HALF = np.sqrt(np.pi) / 2


def scaled_constants(resolution: int) -> dict[str, float]:
    """Radius (>= MIN_RADIUS), gravity and speed scale in pixels (per frame) at `resolution`."""
    s = resolution / REFERENCE_RESOLUTION
    return {"radius": max(RADIUS * s, MIN_RADIUS), "gravity": GRAVITY * s, "scale": s}


def occluder_box(resolution: int) -> np.ndarray:
    """Occluder (y0, x0, y1, x1) in whole pixels at `resolution`, float32 [4]."""
    return np.rint(np.asarray(OCCLUDER) * resolution).astype(np.float32)


def arena(resolution: int) -> tuple[float, float]:
    """Range of centre coordinates keeping a shape inside the frame (both axes)."""
    r = scaled_constants(resolution)["radius"]
    return r - 0.5, resolution - 0.5 - r


def step_axis_walls(x: np.ndarray, vx: np.ndarray, lo: float, hi: float, e: float):
    """One frame of constant-velocity motion between two walls, exact bounce."""
    x = x + vx
    over, under = x > hi, x < lo
    x = np.where(over, hi - e * (x - hi), np.where(under, lo + e * (lo - x), x))
    vx = np.where(over | under, -e * vx, vx)
    return x, vx


def step_axis_gravity(
    y: np.ndarray,
    vy: np.ndarray,
    floor: float,
    g: float,
    e: float,
    impacts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
):
    """One frame of ballistic motion above a floor, with exact bounce times.

    Handles several bounces within a frame; an object whose bounces become
    too small to resolve comes to rest on the floor (y = floor, vy = 0).
    `impacts`, if given, receives one (hit, time within the frame, speed at the hit)
    triple of arrays shaped like y per resolved bounce (the sound builder's events);
    recording them changes nothing in the motion.
    """
    rem = np.ones_like(y)
    for _ in range(4):
        y_end = y + vy * rem + 0.5 * g * rem**2
        hit = (y_end > floor) & (rem > 0)
        # First time the parabola reaches the floor: 0.5 g tau^2 + vy tau + (y - floor) = 0.
        disc = np.maximum(vy**2 + 2.0 * g * (floor - y), 0.0)
        tau = np.clip((-vy + np.sqrt(disc)) / g, 0.0, rem)
        v_hit = vy + g * tau
        if impacts is not None:
            impacts.append((hit, 1.0 - rem + tau, v_hit))
        y = np.where(hit, floor, y_end)
        vy = np.where(hit, -e * v_hit, vy + g * rem)
        rem = np.where(hit, rem - tau, 0.0)
    resting = rem > 0
    return np.where(resting, floor, y), np.where(resting, 0.0, vy)


def simulate(
    y0: np.ndarray, x0: np.ndarray, vy0: np.ndarray, vx0: np.ndarray, frames: int, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """Integrates trajectories of any batch shape S.

    Returns position and velocity float64 [*S, T, 2] ((y, x) and (vy, vx)).
    """
    c = scaled_constants(resolution)
    lo, hi = arena(resolution)
    y, x, vy, vx = (np.asarray(a, np.float64) for a in (y0, x0, vy0, vx0))
    pos, vel = [], []
    for _ in range(frames):
        pos.append(np.stack([y, x], -1))
        vel.append(np.stack([vy, vx], -1))
        x, vx = step_axis_walls(x, vx, lo, hi, RESTITUTION)
        y, vy = step_axis_gravity(y, vy, hi, c["gravity"], RESTITUTION)
    return np.stack(pos, -2), np.stack(vel, -2)


def shape_masks(position: np.ndarray, shape: np.ndarray, resolution: int) -> np.ndarray:
    """Pixel masks (pixel centre inside the shape) for [T, K] objects.

    Args:
      position: float [T, K, 2] (y, x) centroids; shape: int [K] ids (-1 = absent).
    Returns:
      bool [T, K, R, R].
    """
    r = scaled_constants(resolution)["radius"]
    grid = np.arange(resolution, dtype=np.float32)
    dy = grid[None, None, :, None] - position[..., 0, None, None].astype(np.float32)
    dx = grid[None, None, None, :] - position[..., 1, None, None].astype(np.float32)
    circle = dy**2 + dx**2 <= r**2
    half = _SQUARE_HALF * r
    square = (np.abs(dy) <= half) & (np.abs(dx) <= half)
    # Equilateral triangle, apex up, circumradius r, centroid at the centre.
    s3 = np.sqrt(3.0) / 2
    triangle = (dy <= r / 2) & (-dy / 2 + s3 * dx <= r / 2) & (-dy / 2 - s3 * dx <= r / 2)
    sid = shape[None, :, None, None]
    return ((sid == 0) & circle) | ((sid == 1) & square) | ((sid == 2) & triangle)


def render(
    position: np.ndarray, shape: np.ndarray, color: np.ndarray, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draws one clip. Returns video uint8 [T, R, R, 3] and visible bool [T, K]."""
    frames = position.shape[0]
    masks = shape_masks(position, shape, resolution)
    video = np.broadcast_to(BACKGROUND, (frames, resolution, resolution, 3)).copy()
    for k in range(len(shape)):
        if shape[k] >= 0:
            video[masks[:, k]] = PALETTE[color[k]]
    y0, x0, y1, x1 = occluder_box(resolution).astype(int)
    occ = np.zeros((resolution, resolution), bool)
    occ[y0:y1, x0:x1] = True
    video[:, occ] = OCCLUDER_COLOR
    visible = (masks & ~occ).any(axis=(2, 3))
    return video, visible


def sample_initial(rng: np.random.Generator, resolution: int) -> dict[str, np.ndarray]:
    """Number of objects, shapes, colours and initial state of one clip ([K] arrays)."""
    c = scaled_constants(resolution)
    lo, hi = arena(resolution)
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    shape = np.full(MAX_OBJECTS, -1, np.int64)
    color = np.full(MAX_OBJECTS, -1, np.int64)
    shape[:n] = rng.integers(0, len(SHAPES), size=n)
    color[:n] = rng.choice(len(PALETTE), size=n, replace=False)
    x0 = rng.uniform(lo, hi, size=MAX_OBJECTS)
    y0 = rng.uniform(lo, lo + 0.6 * (hi - lo), size=MAX_OBJECTS)
    vx0 = rng.uniform(*SPEED_X_RANGE, size=MAX_OBJECTS) * rng.choice([-1.0, 1.0], MAX_OBJECTS)
    vy0 = rng.uniform(*SPEED_Y_RANGE, size=MAX_OBJECTS)
    vx0, vy0 = vx0 * c["scale"], vy0 * c["scale"]
    # Never reach the ceiling: the apex of the first arc stays inside the arena, and
    # bounces only lose energy.
    vy_max = np.sqrt(2.0 * c["gravity"] * (y0 - lo))
    vy0 = np.maximum(vy0, -vy_max)
    return {"n": n, "shape": shape, "color": color, "y0": y0, "x0": x0, "vy0": vy0, "vx0": vx0}


def simulate_chunk(
    rngs: list[np.random.Generator], frames: int, resolution: int
) -> tuple[list[dict[str, np.ndarray]], np.ndarray, np.ndarray]:
    """Initial states of a chunk of clips (one Generator each) and their trajectories,
    simulated together: (initial states, position and velocity float64 [B, K, T, 2])."""
    init = [sample_initial(rng, resolution) for rng in rngs]
    stack = {k: np.stack([i[k] for i in init]) for k in ("y0", "x0", "vy0", "vx0")}
    pos, vel = simulate(stack["y0"], stack["x0"], stack["vy0"], stack["vx0"], frames, resolution)
    return init, pos, vel


def clip_features(
    ini: dict[str, np.ndarray], pos: np.ndarray, vel: np.ndarray, resolution: int
) -> dict[str, Any]:
    """The stored features of one simulated clip (pos, vel float64 [K, T, 2]): renders it."""
    present = ini["shape"] >= 0
    p = (pos * present[:, None, None]).transpose(1, 0, 2).astype(np.float32)
    v = (vel * present[:, None, None]).transpose(1, 0, 2).astype(np.float32)
    video, visible = render(p, ini["shape"], ini["color"], resolution)
    return {
        "video": video,
        "label": np.int64(ini["shape"][0]),
        "states": {
            "position": p,
            "velocity": v,
            "visible": visible & present[None, :],
            "present": present,
            "shape": ini["shape"],
            "color": ini["color"],
            "occluder": occluder_box(resolution),
        },
    }


def render_chunk(rngs: list[np.random.Generator], frames: int, resolution: int) -> list[dict]:
    """Simulates a chunk of clips together (vectorized physics), renders each."""
    init, pos, vel = simulate_chunk(rngs, frames, resolution)
    return [clip_features(ini, pos[b], vel[b], resolution) for b, ini in enumerate(init)]


def state_features(frames: int) -> dict[str, tfds.features.Tensor]:
    """TFDS features of `states` (see the module docstring) for clips of `frames` frames."""
    t, k = frames, MAX_OBJECTS
    return {
        "position": tfds.features.Tensor(shape=(t, k, 2), dtype=np.float32),
        "velocity": tfds.features.Tensor(shape=(t, k, 2), dtype=np.float32),
        "visible": tfds.features.Tensor(shape=(t, k), dtype=np.bool_),
        "present": tfds.features.Tensor(shape=(k,), dtype=np.bool_),
        "shape": tfds.features.Tensor(shape=(k,), dtype=np.int64),
        "color": tfds.features.Tensor(shape=(k,), dtype=np.int64),
        "occluder": tfds.features.Tensor(shape=(4,), dtype=np.float32),
    }


class BouncingShapes(ProceduralVideoBuilder):
    """Coloured shapes under gravity with an occluder, with ground-truth states (offline)."""

    BUILDER_CONFIGS = PRESETS
    DEFAULT_BUILDER_CONFIG_NAME = "default"
    DESCRIPTION = __doc__
    MIN_RESOLUTION = 16

    def _features(self, cfg: ClipsConfig) -> dict[str, Any]:
        t, r = int(cfg.frames), int(cfg.resolution)
        return {
            "video": video_feature(t, r, 3),
            "label": tfds.features.ClassLabel(names=list(SHAPES)),
            "states": tfds.features.FeaturesDict(state_features(t)),
        }

    def _render_chunk(
        self, rngs: list[np.random.Generator], cfg: ClipsConfig, split: str
    ) -> list[dict[str, Any]]:
        del split  # both splits come from the same distribution (different seeds)
        return render_chunk(rngs, int(cfg.frames), int(cfg.resolution))
