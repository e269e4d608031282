"""Noise schedules in log-SNR (lambda), continuous time t in [0, 1] (VDM / Imagen Video).

A schedule maps t to lambda(t) = log(alpha_t^2 / sigma_t^2), decreasing from `logsnr_max` at
t = 0 (almost data) to `logsnr_min` at t = 1 (almost pure noise). The process is
variance-preserving: alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda).

Resolution shift (simple diffusion, Hoogeboom et al. 2023): a shift `a` moves the curve down
by 2 log a (lambda_shifted = lambda - 2 log a), so an image with `a` times the side length
sees the same per-pixel SNR as the base resolution. `a = resolution / base_resolution`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Schedule = Callable[[jax.Array], jax.Array]


def unit_time_grid(steps: int, dtype=jnp.float32) -> jax.Array:
    """The one time grid every sampler, ODE solver and distillation student walks:
    u_i = i / steps for i = steps .. 0, [steps + 1] from 1 (noise) down to 0 (data)."""
    return jnp.arange(steps, -1, -1, dtype=dtype) / steps


def step_times(i: jax.Array, steps: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """(u_t, u_s) of step i of `steps` on `unit_time_grid`, computed inside a loop (the step
    count may be traced): u_t = (steps - i) / steps, u_s = (steps - i - 1) / steps."""
    n = jnp.asarray(steps)
    return (n - i).astype(dtype) / n.astype(dtype), (n - i - 1).astype(dtype) / n.astype(dtype)


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(alpha, sigma) with alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda); same shape."""
    logsnr = jnp.asarray(logsnr)
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def logsnr_from_alpha_sigma(alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """lambda = log(alpha^2 / sigma^2) = 2 (log alpha - log sigma)."""
    return 2.0 * (jnp.log(alpha) - jnp.log(sigma))


def _check_range(logsnr_min: float, logsnr_max: float, shift: float) -> None:
    if not logsnr_min < logsnr_max:
        raise ValueError(f"need logsnr_min < logsnr_max, got {logsnr_min} >= {logsnr_max}")
    if not shift > 0:
        raise ValueError(f"schedule shift must be > 0, got {shift}")


def logsnr_cosine(
    t: jax.Array, logsnr_min: float = -20.0, logsnr_max: float = 20.0, shift: float = 1.0
) -> jax.Array:
    """Cosine schedule: lambda(t) = -2 log tan(pi t / 2) - 2 log(shift), clipped by remapping t.

    Instead of clipping lambda (which would flatten the ends), t in [0, 1] is mapped linearly
    onto [t_min, t_max], the times at which the shifted curve equals logsnr_max and
    logsnr_min, so lambda(0) = logsnr_max and lambda(1) = logsnr_min exactly (VDM: [-20, 20]).
    t: any shape; returns lambda with t's shape.
    """
    _check_range(logsnr_min, logsnr_max, shift)
    log_shift = 2.0 * math.log(shift)
    # -2 log tan(u) - log_shift = lam  <=>  u = atan(exp(-(lam + log_shift) / 2))
    u_min = math.atan(math.exp(-0.5 * (logsnr_max + log_shift)))
    u_max = math.atan(math.exp(-0.5 * (logsnr_min + log_shift)))
    t = jnp.asarray(t)
    u = u_min + t * (u_max - u_min)
    lam = -2.0 * jnp.log(jnp.tan(u)) - log_shift
    # Round-off guard only: by construction lam already lies in the range for t in [0, 1].
    return jnp.clip(lam, logsnr_min, logsnr_max)


def logsnr_linear(
    t: jax.Array, logsnr_min: float = -5.0, logsnr_max: float = 13.3, shift: float = 1.0
) -> jax.Array:
    """Linear in log-SNR (the fixed schedule of Kingma et al. 2021, VDM): lambda goes from
    logsnr_max at t=0 to logsnr_min at t=1 on a straight line. The resolution shift moves the
    line down by 2 log(shift), then the result is clipped to [logsnr_min, logsnr_max].
    """
    _check_range(logsnr_min, logsnr_max, shift)
    t = jnp.asarray(t)
    lam = logsnr_max + t * (logsnr_min - logsnr_max) - 2.0 * math.log(shift)
    return jnp.clip(lam, logsnr_min, logsnr_max)


def logsnr_beta_linear(
    t: jax.Array,
    logsnr_min: float = -10.0,
    logsnr_max: float = 20.0,
    shift: float = 1.0,
    beta_min: float = 0.1,
    beta_max: float = 20.0,
) -> jax.Array:
    """DDPM's linear-beta schedule in its continuous-time limit (VP SDE, Song et al. 2021).

    beta(t) = beta_min + t (beta_max - beta_min), alpha^2 = exp(-B(t)) with
    B(t) = beta_min t + (beta_max - beta_min) t^2 / 2, so lambda = -log(expm1(B(t))).
    (beta_min, beta_max) = (0.1, 20) is the limit of 1000 steps with betas 1e-4 .. 0.02.
    Truncation as for the cosine: t is remapped onto the B-range where the shifted lambda
    spans [logsnr_min, logsnr_max] exactly (inverse: B = softplus(-lambda), a quadratic in t).
    """
    _check_range(logsnr_min, logsnr_max, shift)
    log_shift = 2.0 * math.log(shift)
    db = beta_max - beta_min

    def t_of_lam(lam: float) -> float:
        big_b = math.log1p(math.exp(-(lam + log_shift)))  # softplus(-(lam + log_shift))
        if db == 0:
            return big_b / beta_min
        return (-beta_min + math.sqrt(beta_min**2 + 2.0 * db * big_b)) / db

    s_min, s_max = t_of_lam(logsnr_max), t_of_lam(logsnr_min)
    s = s_min + jnp.asarray(t) * (s_max - s_min)
    big_b = beta_min * s + 0.5 * db * s**2
    lam = -jnp.log(jnp.expm1(big_b)) - log_shift
    return jnp.clip(lam, logsnr_min, logsnr_max)


SCHEDULES: dict[str, Callable[..., jax.Array]] = {
    "cosine": logsnr_cosine,
    "linear": logsnr_linear,
    "beta_linear": logsnr_beta_linear,
}


def get_schedule(name: str, **kwargs) -> Schedule:
    """A function t -> lambda(t) for schedule `name` with its keyword arguments bound.

    Raises ValueError naming the allowed schedules or the accepted keywords.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; allowed: {sorted(SCHEDULES)}")
    fn = SCHEDULES[name]
    accepted = [p for p in inspect.signature(fn).parameters if p != "t"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"schedule {name!r} got unknown keywords {unknown}; accepted: {accepted}")
    bound = {k: float(v) for k, v in kwargs.items()}
    # Validate the ranges now (at config time) rather than at the first call under jit.
    fn(0.5, **bound)

    def schedule(t: jax.Array) -> jax.Array:
        return fn(t, **bound)

    schedule.__name__ = f"logsnr_{name}"
    schedule.__doc__ = f"{name} schedule with {bound}: t -> log-SNR."
    return schedule


def uniform_t(key: jax.Array, batch: int, *, low_discrepancy: bool = True) -> jax.Array:
    """Training times t [batch] in [0, 1). Low-discrepancy (VDM): one uniform offset u and
    t_i = (u + i / batch) mod 1, which lowers the variance of the batch loss."""
    if low_discrepancy:
        return jnp.mod(jax.random.uniform(key, ()) + jnp.arange(batch) / batch, 1.0)
    return jax.random.uniform(key, (batch,))
