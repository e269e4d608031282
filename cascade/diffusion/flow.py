"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023; SD3, Esser et al. 2024).

x_t = (1 - t) x0 + t eps, t in [0, 1], t = 1 is pure noise; the network predicts the
velocity v = dx_t/dt = eps - x0 and sampling integrates dx/dt = v from t = 1 down to t = 0.

Timestep shift (SD3): t' = a t / (1 + (a - 1) t) with a = sqrt(pixels / base_pixels), which
spends more of training and of the sampling grid at high noise for larger inputs.

`velocity_fn(z [B,...], t [B]) -> v [B,...]` closes over conditioning; classifier-free
guidance is `guidance.cfg_denoise_fn(model_fn, w, null, label)` (raw-output combination).

Per-frame noise (Diffusion Forcing, Chen et al. 2024): `frame_times` draws a flow time per
latent frame `[B, T]` (independent, monotone "pyramid", or teacher forcing: clean context,
one noised target chunk) with a loss weight per frame; `flow_interpolate` and
`weighted_flow_loss` take such `[B, T]` times and weights against `[B, T, ...]` latents.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from cascade.diffusion.gaussian import bcast
from cascade.diffusion.schedules import step_times, unit_time_grid

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]


def flow_interpolate(x0: jax.Array, *, eps: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = (1 - t) x0 + t eps; x0, eps [B,...], t [B], scalar, or [B, T] per frame of
    [B, T, ...] latents."""
    t = bcast(t, x0)
    return (1.0 - t) * x0 + t * eps


def flow_target(x0: jax.Array, eps: jax.Array) -> jax.Array:
    """The regression target v = eps - x0."""
    return eps - x0


def flow_predictions(v: jax.Array, z: jax.Array, t: jax.Array) -> dict[str, jax.Array]:
    """x0 = z - t v and eps = z + (1 - t) v from a velocity at (z, t)."""
    t = bcast(t, z)
    return {"x0": z - t * v, "eps": z + (1.0 - t) * v, "v": v}


def shift_time(t: jax.Array, shift: float | jax.Array) -> jax.Array:
    """SD3 shift t' = a t / (1 + (a - 1) t); a = 1 is the identity, a > 1 moves t to noise."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def shift_for_resolution(pixels: int | float, base_pixels: int | float) -> float:
    """a = sqrt(pixels / base_pixels) (pixels may count tokens or latent elements: any size)."""
    if pixels <= 0 or base_pixels <= 0:
        raise ValueError(f"pixels and base_pixels must be > 0, got {pixels}, {base_pixels}")
    return math.sqrt(pixels / base_pixels)


def sample_t_logit_normal(
    key: jax.Array,
    shape: tuple[int, ...],
    m: float = 0.0,
    s: float = 1.0,
    shift: float = 1.0,
    dtype: jnp.dtype = jnp.float32,
) -> jax.Array:
    """Training times t = shift_time(sigmoid(m + s n), shift), n ~ N(0, 1). Median is
    shift_time(sigmoid(m), shift) (the map is monotone)."""
    n = jax.random.normal(key, shape, dtype)
    return shift_time(jax.nn.sigmoid(m + s * n), shift)


def flow_loss(v_pred: jax.Array, x0: jax.Array, eps: jax.Array) -> jax.Array:
    """Per-example flow-matching loss [B]: mean over non-batch axes of (v^ - (eps - x0))^2."""
    d = jnp.square(v_pred - flow_target(x0, eps))
    return jnp.mean(d.reshape(d.shape[0], -1), axis=1)


FRAME_SCHEDULES = ("independent", "pyramid", "teacher_forcing")


def frame_times(
    key: jax.Array,
    batch: int,
    *,
    chunks: int,
    frames_per_chunk: int,
    frames_per_level: int,
    schedule: str,
    m: float = 0.0,
    s: float = 1.0,
    shift: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Per-frame training times t `[B, T]` and loss weights `[B, T]`, T = chunks * frames_per_chunk.

    Times are logit-normal (`sample_t_logit_normal`), one per group of `frames_per_level`
    frames (a temporal patch of the DiT shares one level):
    - "independent": every level its own draw (all weights 1);
    - "pyramid": the draws sorted along time, so earlier frames are never noisier than later
      ones, the order a chunk-by-chunk rollout sees (all weights 1);
    - "teacher_forcing": a random target chunk k per sample at one drawn t; the chunks before
      it clean (t = 0), the ones after pure noise (t = 1, weight 0: they cannot influence chunk
      k through causal attention and are not trained on); weight 1 on chunk k only.
    """
    if schedule not in FRAME_SCHEDULES:
        raise ValueError(
            f"frame_times: schedule must be one of {FRAME_SCHEDULES}, got {schedule!r}"
        )
    frames = chunks * frames_per_chunk
    if frames_per_chunk % frames_per_level:
        raise ValueError(
            f"frame_times: frames_per_chunk={frames_per_chunk} is not a multiple of "
            f"frames_per_level={frames_per_level}"
        )
    k_t, k_chunk = jax.random.split(key)
    if schedule == "teacher_forcing":
        t = sample_t_logit_normal(k_t, (batch, 1), m, s, shift)
        target = jax.random.randint(k_chunk, (batch, 1), 0, chunks)
        chunk_of = jnp.arange(frames)[None] // frames_per_chunk  # [1, T]
        times = jnp.where(chunk_of < target, 0.0, jnp.where(chunk_of == target, t, 1.0))
        return times, (chunk_of == target).astype(jnp.float32)
    levels = sample_t_logit_normal(k_t, (batch, frames // frames_per_level), m, s, shift)
    if schedule == "pyramid":
        levels = jnp.sort(levels, axis=1)
    return jnp.repeat(levels, frames_per_level, axis=1), jnp.ones((batch, frames), jnp.float32)


def weighted_flow_loss(
    v_pred: jax.Array, x0: jax.Array, eps: jax.Array, weight: jax.Array
) -> jax.Array:
    """Flow-matching loss per example [B] with per-frame weights `[B, T]` on `[B, T, ...]`
    latents: the weighted mean over frames of each frame's mean squared velocity error."""
    d = jnp.square(v_pred - flow_target(x0, eps))
    per_frame = jnp.mean(d.reshape(*d.shape[:2], -1), axis=2)  # [B, T]
    return jnp.sum(weight * per_frame, axis=1) / jnp.maximum(jnp.sum(weight, axis=1), 1e-8)


def time_grid(steps: int | jax.Array, shift: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """t_i = shift_time(i / steps), i = steps .. 0: [steps + 1] from 1 down to 0 (static steps)."""
    return shift_time(unit_time_grid(steps, dtype), shift)


def _init(shape, key, z_init, dtype):
    z = jax.random.normal(key, shape, dtype) if z_init is None else z_init
    if z.shape != tuple(shape):
        raise ValueError(f"z_init shape {z.shape} != requested shape {tuple(shape)}")
    return z


def _times(i, n, shift, dtype):
    """Shifted (t, t_next) of step i of n, computed inside the loop (steps may be traced)."""
    u_t, u_s = step_times(i, n, dtype)
    return shift_time(u_t, shift), shift_time(u_s, shift)


def _levels(t: jax.Array, z: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(t, z.dtype), (z.shape[0],))


def euler_step(velocity_fn: VelocityFn, z: jax.Array, *, t: jax.Array, t_next: jax.Array):
    """z_{t_next} = z_t + (t_next - t) v(z_t, t); t, t_next scalars or per-example [B]."""
    t, t_next = _levels(t, z), _levels(t_next, z)
    return z + bcast(t_next - t, z) * velocity_fn(z, t)


def heun_step(velocity_fn: VelocityFn, z: jax.Array, *, t: jax.Array, t_next: jax.Array):
    """Heun (explicit trapezoid): Euler predictor, then the average of both slopes."""
    t, t_next = _levels(t, z), _levels(t_next, z)
    dt = bcast(t_next - t, z)
    v1 = velocity_fn(z, t)
    v2 = velocity_fn(z + dt * v1, t_next)
    return z + dt * 0.5 * (v1 + v2)


def _integrate(step, velocity_fn, shape, key, steps, shift, z_init, dtype):
    z = _init(shape, key, z_init, dtype)
    n = jnp.asarray(steps)

    def body(i, z):
        t, t_next = _times(i, n, shift, z.dtype)
        return step(velocity_fn, z, t=t, t_next=t_next).astype(z.dtype)

    # A Python step count gives a static trip count: the loop lowers to a scan, whose
    # FLOPs cost accounting can count; a traced count still compiles one loop for all.
    return jax.lax.fori_loop(0, steps if isinstance(steps, int) else n, body, z)


def euler_sample(
    velocity_fn: VelocityFn,
    shape: tuple[int, ...],
    key: jax.Array,
    steps: int | jax.Array,
    shift: float = 1.0,
    *,
    z_init: jax.Array | None = None,
    dtype: jnp.dtype = jnp.float32,
) -> jax.Array:
    """Euler integration of dx/dt = v from t = 1 (noise, drawn from key or z_init) to t = 0 on
    the shifted grid; `steps` network calls; steps may be traced (one compiled loop)."""
    return _integrate(euler_step, velocity_fn, shape, key, steps, shift, z_init, dtype)


def heun_sample(
    velocity_fn: VelocityFn,
    shape: tuple[int, ...],
    key: jax.Array,
    steps: int | jax.Array,
    shift: float = 1.0,
    *,
    z_init: jax.Array | None = None,
    dtype: jnp.dtype = jnp.float32,
) -> jax.Array:
    """Heun (2nd order) integration, same grid as `euler_sample`; 2 * steps network calls
    (the velocity is finite at t = 0, so the last step keeps its correction)."""
    return _integrate(heun_step, velocity_fn, shape, key, steps, shift, z_init, dtype)
