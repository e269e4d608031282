"""Progressive distillation targets: one student step == two teacher steps, exactly (float64).

Teachers are exact denoisers of Gaussian data (they depend on z, so the two teacher steps
are not trivially one step).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cascade.diffusion import distill, flow, gaussian, samplers, schedules

MU, S = 0.3, 0.5
PARAMS = ("eps", "x0", "v")


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def gaussian_teacher(parametrization):
    def fn(z, logsnr):
        a, sg = schedules.alpha_sigma(gaussian.bcast(logsnr, z))
        x_hat = MU + a * S**2 / (a**2 * S**2 + sg**2) * (z - a * MU)
        return gaussian.predictions(x_hat, z, logsnr=logsnr, parametrization="x0")[parametrization]

    return fn


def flow_teacher(z, t):
    t = gaussian.bcast(t, z)
    var = (1 - t) ** 2 * S**2 + t**2
    return -MU + (t - (1 - t) * S**2) / var * (z - (1 - t) * MU)


def test_grids_and_student_times():
    np.testing.assert_allclose(schedules.unit_time_grid(4), [1.0, 0.75, 0.5, 0.25, 0.0])
    u = distill.sample_student_u(jax.random.PRNGKey(0), 4096, 8, jnp.float64)
    np.testing.assert_allclose(np.unique(np.asarray(u)), np.arange(1, 9) / 8)


@pytest.mark.parametrize("schedule_name", ["cosine", "linear"])
def test_gaussian_student_step_reproduces_two_teacher_steps(schedule_name):
    sched = schedules.get_schedule(schedule_name)
    n_student = 4
    key = jax.random.PRNGKey(1)
    z_t = jax.random.normal(key, (8, 2, 3, 3, 1), jnp.float64)
    u = jnp.array([1.0, 0.75, 0.5, 0.25, 1.0, 0.5, 0.25, 0.75])  # every grid time, [B]
    for teacher_param in PARAMS:
        tgt = distill.gaussian_distill_target(
            gaussian_teacher(teacher_param), z_t, u, student_steps=n_student,
            schedule=sched, parametrization=teacher_param,
        )  # fmt: skip
        lam, lam_end = sched(u), sched(u - 1.0 / n_student)
        np.testing.assert_allclose(tgt["logsnr"], lam)
        # The targets are a consistent (x, eps) decomposition of z_t.
        np.testing.assert_allclose(
            gaussian.q_sample(tgt["x0"], eps=tgt["eps"], logsnr=lam), z_t, atol=1e-10
        )
        for student_param in PARAMS:
            out = tgt[student_param]  # a student that outputs exactly its target
            np.testing.assert_allclose(
                out,
                gaussian.target_for(student_param, x=tgt["x0"], eps=tgt["eps"], logsnr=lam),
                atol=1e-10,
            )
            pred = gaussian.predictions(out, z_t, logsnr=lam, parametrization=student_param)
            one_step = samplers.ddim_step(z_t, pred, logsnr_s=lam_end)
            np.testing.assert_allclose(one_step, tgt["z_end"], atol=1e-10)
            for w in gaussian.WEIGHTINGS:
                loss = distill.gaussian_distill_loss(out, tgt, student_param, w)
                assert loss.shape == (8,)
                np.testing.assert_allclose(loss, 0.0, atol=1e-16)
            wrong = distill.gaussian_distill_loss(out + 0.1, tgt, student_param, "snr_trunc")
            assert float(jnp.min(wrong)) > 0


def test_gaussian_student_chain_equals_teacher_sampler():
    """N oracle-student steps on the student grid == the teacher's 2N-step DDIM sampler."""
    sched = schedules.get_schedule("cosine", shift=2.0)
    teacher = gaussian_teacher("v")
    n = 4
    z1 = jax.random.normal(jax.random.PRNGKey(2), (16, 3), jnp.float64)
    ref = samplers.sample(
        teacher, z1.shape, jax.random.PRNGKey(0), steps=2 * n, sampler="ddim", schedule=sched,
        parametrization="v", clip_x0=False, z_init=z1, final_x0=False,
    )  # fmt: skip
    z = z1
    for u in schedules.unit_time_grid(n, jnp.float64)[:-1]:
        tgt = distill.gaussian_distill_target(
            teacher, z, u, student_steps=n, schedule=sched, parametrization="v"
        )
        lam = jnp.full((z.shape[0],), sched(u))
        pred = gaussian.predictions(tgt["v"], z, logsnr=lam, parametrization="v")
        z = samplers.ddim_step(z, pred, logsnr_s=sched(u - 1.0 / n))
    np.testing.assert_allclose(z, ref, atol=1e-10)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_flow_student_step_reproduces_two_teacher_steps(solver):
    n, shift = 4, 3.0
    key = jax.random.PRNGKey(3)
    z1 = jax.random.normal(key, (8, 2, 2, 2, 1), jnp.float64)
    sampler = {"euler": flow.euler_sample, "heun": flow.heun_sample}[solver]
    ref = sampler(flow_teacher, z1.shape, key, 2 * n, shift, z_init=z1, dtype=jnp.float64)
    z = z1
    for u in schedules.unit_time_grid(n, jnp.float64)[:-1]:
        tgt = distill.flow_distill_target(
            flow_teacher, z, u, student_steps=n, shift=shift, solver=solver
        )
        np.testing.assert_allclose(distill.flow_distill_loss(tgt["v"], tgt), 0.0, atol=1e-20)
        # One student Euler step with the target velocity lands on the teacher's z_{t''}.
        step = flow.euler_step(lambda z_, t_, v=tgt["v"]: v, z, t=tgt["t"], t_next=tgt["t_end"])
        np.testing.assert_allclose(step, tgt["z_end"], atol=1e-12)
        z = step
    # Chained over the student grid: the teacher's 2N-step sampler, exactly.
    np.testing.assert_allclose(z, ref, atol=1e-10)
    with pytest.raises(ValueError, match="allowed"):
        distill.flow_distill_target(flow_teacher, z1, 1.0, student_steps=n, solver="rk4")


def test_flow_distill_per_example_times():
    """Different u per example (as in training) give each example its own two-step target."""
    n = 8
    z = jax.random.normal(jax.random.PRNGKey(4), (3, 5), jnp.float64)
    u = jnp.array([1.0, 0.5, 0.125])
    tgt = distill.flow_distill_target(flow_teacher, z, u, student_steps=n)
    for i in range(3):
        single = distill.flow_distill_target(flow_teacher, z[i : i + 1], u[i], student_steps=n)
        np.testing.assert_allclose(tgt["v"][i], single["v"][0], atol=1e-14)
    np.testing.assert_allclose(tgt["t"] - tgt["t_end"], 1.0 / n, atol=1e-14)  # shift = 1
