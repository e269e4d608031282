"""Progressive distillation targets (Salimans & Ho 2022), pure functions.

A student with N steps learns to match, in one step u -> u - 1/N, two deterministic steps of
its teacher (2N steps) u -> u - 1/(2N) -> u - 1/N. Times u live on the sampler's grid
u_i = i / N (the same grid `samplers.sample` and `flow.euler_sample` walk), mapped to
log-SNR by the schedule (Gaussian) or to flow time by the SD3 shift (flow matching).
Each round halves N; the training loop that alternates rounds belongs to the trainer.

teacher_fn(z [B,...], level [B]) -> output, level = log-SNR (Gaussian) or t (flow); wrap it
with `guidance.cfg_denoise_fn` first to distil a guided teacher.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from cascade.configs import ConfigError
from cascade.diffusion import flow, gaussian, samplers
from cascade.diffusion.schedules import Schedule, alpha_sigma

TeacherFn = Callable[[jax.Array, jax.Array], jax.Array]


def sample_student_u(key: jax.Array, batch: int, steps: int, dtype=jnp.float32) -> jax.Array:
    """Training times u [batch] drawn uniformly from the student's grid {1/N, 2/N, ..., 1}."""
    i = jax.random.randint(key, (batch,), 1, steps + 1)
    return i.astype(dtype) / steps


def _three_times(u: jax.Array, student_steps: int | jax.Array, z: jax.Array):
    u = jnp.broadcast_to(jnp.asarray(u, z.dtype), (z.shape[0],))
    dtype = z.dtype
    n = jnp.asarray(student_steps, dtype)
    return u, u - 0.5 / n, u - 1.0 / n


def gaussian_distill_target(
    teacher_fn: TeacherFn,
    z_t: jax.Array,
    u: jax.Array,
    *,
    student_steps: int | jax.Array,
    schedule: Schedule,
    parametrization: str,
    clip_x0: bool | float | None = None,
) -> dict[str, jax.Array]:
    """Targets for a Gaussian student at (z_t [B,...], u [B]) from two teacher DDIM steps.

    Teacher (eta = 0) in its `parametrization`: z_t -> z_{t'} -> z_{t''}, t' = u - 1/(2N),
    t'' = u - 1/N. The student's x target makes one DDIM step land on z_{t''} exactly:
      x~ = (z_{t''} - (sigma_{t''}/sigma_t) z_t) / (alpha_{t''} - (sigma_{t''}/sigma_t) alpha_t),
      eps~ = (z_t - alpha_t x~) / sigma_t,   v~ = alpha_t eps~ - sigma_t x~.
    Returns {"x0", "eps", "v", "logsnr" [B], "z_end" (the teacher's z_{t''})}. Train the
    student (in any parametrization) with `gaussian_distill_loss`.
    """
    u0, u1, u2 = _three_times(u, student_steps, z_t)
    l0, l1, l2 = schedule(u0), schedule(u1), schedule(u2)

    def teacher_step(z, lt, ls):
        pred = gaussian.predictions(
            teacher_fn(z, lt), z, logsnr=lt, parametrization=parametrization, clip_x0=clip_x0
        )
        return samplers.ddim_step(z, pred, logsnr_s=ls)

    z_mid = teacher_step(z_t, l0, l1)
    z_end = teacher_step(z_mid, l1, l2)
    a_t, s_t = alpha_sigma(gaussian.bcast(l0, z_t))
    a_e, s_e = alpha_sigma(gaussian.bcast(l2, z_t))
    ratio = s_e / s_t
    x_tilde = (z_end - ratio * z_t) / (a_e - ratio * a_t)
    eps_tilde = (z_t - a_t * x_tilde) / s_t
    return {
        "x0": x_tilde,
        "eps": eps_tilde,
        "v": a_t * eps_tilde - s_t * x_tilde,
        "logsnr": l0,
        "z_end": z_end,
    }


def gaussian_distill_loss(
    student_out: jax.Array, target: dict[str, jax.Array], parametrization: str, weighting: str
) -> jax.Array:
    """Per-example [B] loss of the student's output (in `parametrization`) against the targets
    of `gaussian_distill_target`, with the same weighting as diffusion training."""
    return gaussian.diffusion_loss(
        student_out,
        x=target["x0"],
        eps=target["eps"],
        logsnr=target["logsnr"],
        parametrization=parametrization,
        weighting=weighting,
    )


def flow_distill_target(
    teacher_fn: TeacherFn,
    z_t: jax.Array,
    u: jax.Array,
    *,
    student_steps: int | jax.Array,
    shift: float = 1.0,
    solver: str = "euler",
) -> dict[str, jax.Array]:
    """Target velocity for a flow student at (z_t [B,...], u [B]) from two teacher steps.

    Flow times t = shift_time(u), t' = shift_time(u - 1/(2N)), t'' = shift_time(u - 1/N)
    (the grids of `flow.euler_sample` with N and 2N steps). The teacher takes two `solver`
    ("euler" | "heun") steps z_t -> z_{t''}; the target v~ = (z_t - z_{t''}) / (t - t'') makes
    one student Euler step land on z_{t''} exactly. Returns {"v", "t" [B], "t_end" [B],
    "z_end"}; train with `flow.flow_loss`-style MSE via `flow_distill_loss`.
    """
    steppers = {"euler": flow.euler_step, "heun": flow.heun_step}
    if solver not in steppers:
        raise ValueError(f"unknown solver {solver!r}; allowed: {sorted(steppers)}")
    u0, u1, u2 = _three_times(u, student_steps, z_t)
    t0, t1, t2 = (flow.shift_time(x, shift) for x in (u0, u1, u2))
    step = steppers[solver]

    z_mid = step(teacher_fn, z_t, t=t0, t_next=t1)
    z_end = step(teacher_fn, z_mid, t=t1, t_next=t2)
    v_target = (z_t - z_end) / gaussian.bcast(t0 - t2, z_t)
    return {"v": v_target, "t": t0, "t_end": t2, "z_end": z_end}


def flow_distill_loss(student_v: jax.Array, target: dict[str, jax.Array]) -> jax.Array:
    """Per-example [B] mean squared error between the student's velocity and the target."""
    d = jnp.square(student_v - target["v"])
    return jnp.mean(d.reshape(d.shape[0], -1), axis=1)


def rounds(start_steps: int, end_steps: int) -> int:
    """Number of halving rounds from `start_steps` to `end_steps` sampling steps (a ConfigError
    unless start_steps = end_steps x 2^r, r >= 1)."""
    ratio = start_steps // end_steps
    if end_steps < 1 or start_steps % end_steps or ratio & (ratio - 1) or ratio < 2:
        raise ConfigError(
            f"config.distill: start_steps={start_steps} must be end_steps={end_steps} times a "
            "power of two >= 2 (each round halves the step count)."
        )
    return int(math.log2(ratio))
