"""bouncing_shapes with sound: every impact is heard, sample-exactly when it happens.

The clips (video and states) are exactly those of `bouncing_shapes` with the same
config: the same per-clip Generator draws the same initial states first, and the
sound's own randomness (a faint noise floor, the click of each impact) is drawn after.
On top, every impact of an object on the floor or a side wall emits a short
percussive tone: its pitch comes from the object's shape (`SHAPE_PITCH`), its
loudness from the normal impact speed (`LOUD_SPEED` and above is full loudness,
below `MIN_IMPACT_SPEED` it is silent and not stored). Objects never touch the
ceiling, and the physics has no object-object collisions (shapes pass over each
other), so floor and walls are the only impacts. The motion is integrated exactly
(`bouncing_shapes.step_axis_gravity` reports each bounce's time within its frame), so
impact times are exact to the sample.

Time: frame t is the instant t / FPS seconds; the mono track has SAMPLE_RATE samples
per second, SAMPLES_PER_FRAME = SAMPLE_RATE / FPS per frame, so frame t begins at
sample t * SAMPLES_PER_FRAME and an impact at time tau (in frames) starts its sound at
sample round(tau * SAMPLES_PER_FRAME).

Features, besides those of `bouncing_shapes` (T frames, M = T * MAX_OBJECTS):
  audio   int16 [T * SAMPLES_PER_FRAME]   PCM (divide by 32768 for [-1, 1))
  states:
    impact_time    float32 [M]  in frames (sub-frame exact), sorted; -1 for padding
    impact_object  int64   [M]  object index k, -1 for padding
    impact_kind    int64   [M]  index into IMPACT_KINDS, -1 for padding
    impact_speed   float32 [M]  normal speed at the impact, pixels/frame at
                                REFERENCE_RESOLUTION (resolution-independent), 0 padding
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from cascade.data.builders import bouncing_shapes as bs
from cascade.data.builders.base import PRESETS, ClipsConfig

SAMPLE_RATE = 16_000  # Hz
FPS = 8  # frames per second of the clips (cascade's preview and runner default)
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
assert SAMPLE_RATE % FPS == 0  # frames and samples align exactly

IMPACT_KINDS = ("floor", "left_wall", "right_wall")
# Fundamental per shape (circle, square, triangle), Hz: A4, D4, E5 (distinct, all audible).
SHAPE_PITCH = (440.0, 293.66, 659.25)
# Partials of a struck bar (ratios) with their relative amplitudes and decay times (s).
PARTIALS = ((1.0, 1.0, 0.08), (2.76, 0.45, 0.04), (5.40, 0.2, 0.02))
ATTACK = 0.002  # s, linear rise: a sharp but click-free onset
CLICK = 0.004  # s of noise at the strike, relative amplitude CLICK_LEVEL
CLICK_LEVEL = 0.3
SOUND_LENGTH = 0.3  # s, every partial has decayed below -30 dB by then
PEAK = 0.3  # amplitude of a full-speed impact (three at once still fit in [-1, 1])
NOISE_FLOOR = 1e-3  # std of the background noise (-60 dBFS)
# Normal impact speeds (pixels/frame at REFERENCE_RESOLUTION): a fall from the top of the
# arena reaches ~5.3 px/frame; slower bounces than MIN are silent (the object settles).
LOUD_SPEED = 5.0
MIN_IMPACT_SPEED = 0.5


def impact_events(
    position: np.ndarray, velocity: np.ndarray, present: np.ndarray, resolution: int
) -> dict[str, np.ndarray]:
    """Every audible impact of one clip, sorted by time.

    Args:
      position, velocity: float64 [K, T, 2] states at each frame (`simulate`'s output, before
        the float32 cast), (y, x) and (vy, vx); present: bool [K].
    Returns:
      {"time": float64 [N] (frames), "object": int64 [N], "kind": int64 [N] (IMPACT_KINDS),
       "speed": float64 [N] (px/frame at REFERENCE_RESOLUTION)}.
    """
    c = bs.scaled_constants(resolution)
    lo, hi = bs.arena(resolution)
    k_len, t_len, _ = position.shape
    frame = np.broadcast_to(np.arange(t_len, dtype=np.float64), (k_len, t_len))
    obj = np.broadcast_to(np.arange(k_len)[:, None], (k_len, t_len))
    times, objects, kinds, speeds = [], [], [], []

    def add(hit, time, kind, speed):
        times.append((frame + time)[hit])
        objects.append(obj[hit])
        kinds.append(np.broadcast_to(kind, hit.shape)[hit])
        speeds.append(np.abs(speed)[hit] / c["scale"])

    # Floor: replay every frame's step through the builder's own integrator, recording bounces.
    floor: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    y, vy = position[..., 0], velocity[..., 0]
    bs.step_axis_gravity(y, vy, hi, c["gravity"], bs.RESTITUTION, impacts=floor)
    for hit, time, speed in floor:
        add(hit, time, 0, speed)
    # Walls: constant velocity within a frame, so the wall is reached at (wall - x) / vx.
    x, vx = position[..., 1], velocity[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        add(x + vx < lo, (lo - x) / vx, 1, vx)
        add(x + vx > hi, (hi - x) / vx, 2, vx)
    out = {
        "time": np.concatenate(times),
        "object": np.concatenate(objects).astype(np.int64),
        "kind": np.concatenate(kinds).astype(np.int64),
        "speed": np.concatenate(speeds),
    }
    keep = (out["speed"] >= MIN_IMPACT_SPEED) & present[out["object"]]
    order = np.argsort(out["time"][keep], kind="stable")
    return {key: value[keep][order] for key, value in out.items()}


def impact_sound(pitch: float, rng: np.random.Generator) -> np.ndarray:
    """One full-loudness strike at `pitch` Hz: float64 [SOUND_LENGTH * SAMPLE_RATE], peak ~1."""
    t = np.arange(int(SOUND_LENGTH * SAMPLE_RATE)) / SAMPLE_RATE
    tone = sum(a * np.exp(-t / d) * np.sin(2 * np.pi * pitch * r * t) for r, a, d in PARTIALS)
    click = rng.standard_normal(t.shape) * CLICK_LEVEL * (t < CLICK)
    return (tone + click) * np.minimum(t / ATTACK, 1.0)


def synthesize(
    events: dict[str, np.ndarray], shape: np.ndarray, frames: int, rng: np.random.Generator
) -> np.ndarray:
    """Mixes the clip's impact sounds over a faint noise floor.

    Args:
      events: `impact_events`' output; shape: int [K] shape ids.
    Returns:
      float64 [frames * SAMPLES_PER_FRAME], clipped to [-1, 1].
    """
    n = frames * SAMPLES_PER_FRAME
    track = rng.standard_normal(n) * NOISE_FLOOR
    for time, k, speed in zip(events["time"], events["object"], events["speed"], strict=True):
        start = int(np.rint(time * SAMPLES_PER_FRAME))
        if start >= n:
            continue
        sound = impact_sound(SHAPE_PITCH[shape[k]], rng) * PEAK * min(speed / LOUD_SPEED, 1.0)
        end = min(n, start + len(sound))
        track[start:end] += sound[: end - start]
    return np.clip(track, -1.0, 1.0)


def to_pcm16(track: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 PCM (the stored form)."""
    return np.clip(np.rint(np.asarray(track) * 32767.0), -32768, 32767).astype(np.int16)


def max_impacts(frames: int) -> int:
    """Stored impact slots M per clip: a bounce at MIN_IMPACT_SPEED is followed by >= 3 frames
    of flight, so one object makes well under one impact per frame."""
    return frames * bs.MAX_OBJECTS


def render_chunk(rngs: list[np.random.Generator], frames: int, resolution: int) -> list[dict]:
    """`bouncing_shapes.render_chunk`'s clips (identical) with their impacts and sound."""
    init, pos, vel = bs.simulate_chunk(rngs, frames, resolution)
    m = max_impacts(frames)
    out = []
    for b, ini in enumerate(init):
        clip = bs.clip_features(ini, pos[b], vel[b], resolution)
        events = impact_events(pos[b], vel[b], ini["shape"] >= 0, resolution)
        n = len(events["time"])
        if n > m:  # cannot happen (see max_impacts); a bug if it does, never a silent drop
            raise RuntimeError(f"{n} impacts in one clip, more than the {m} slots.")
        pad = m - n
        clip["states"].update(
            impact_time=np.pad(events["time"], (0, pad), constant_values=-1).astype(np.float32),
            impact_object=np.pad(events["object"], (0, pad), constant_values=-1),
            impact_kind=np.pad(events["kind"], (0, pad), constant_values=-1),
            impact_speed=np.pad(events["speed"], (0, pad)).astype(np.float32),
        )
        clip["audio"] = to_pcm16(synthesize(events, ini["shape"], frames, rngs[b]))
        out.append(clip)
    return out


class BouncingShapesSound(bs.BouncingShapes):
    """bouncing_shapes clips with a synchronized mono impact track and stored impacts."""

    BUILDER_CONFIGS = PRESETS
    DEFAULT_BUILDER_CONFIG_NAME = "default"
    DESCRIPTION = __doc__

    def _features(self, cfg: ClipsConfig) -> dict[str, Any]:
        t, m = int(cfg.frames), max_impacts(int(cfg.frames))
        features = super()._features(cfg)
        states = bs.state_features(t)
        states.update(
            impact_time=tfds.features.Tensor(shape=(m,), dtype=np.float32),
            impact_object=tfds.features.Tensor(shape=(m,), dtype=np.int64),
            impact_kind=tfds.features.Tensor(shape=(m,), dtype=np.int64),
            impact_speed=tfds.features.Tensor(shape=(m,), dtype=np.float32),
        )
        features["states"] = tfds.features.FeaturesDict(states)
        features["audio"] = tfds.features.Tensor(
            shape=(t * SAMPLES_PER_FRAME,), dtype=np.int16, encoding=tfds.features.Encoding.BYTES
        )
        return features

    def _render_chunk(
        self, rngs: list[np.random.Generator], cfg: ClipsConfig, split: str
    ) -> list[dict[str, Any]]:
        del split  # both splits come from the same distribution (different seeds)
        return render_chunk(rngs, int(cfg.frames), int(cfg.resolution))
