"""Flow matching math against closed forms, in float64.

For data x0 ~ N(mu, s^2) the exact velocity field is
  v(z, t) = E[eps - x0 | x_t = z] = -mu + (t - (1 - t) s^2) / var_t * (z - (1 - t) mu),
  var_t = (1 - t)^2 s^2 + t^2,
and the ODE from t = 1 maps z_1 to mu + s z_1 exactly (an affine, monotone transport).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cascade.diffusion import flow, guidance

MU, S = 0.3, 0.5
B = 20_000


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def exact_velocity(z, t):
    t = t.reshape(t.shape + (1,) * (z.ndim - 1))
    var = (1 - t) ** 2 * S**2 + t**2
    return -MU + (t - (1 - t) * S**2) / var * (z - (1 - t) * MU)


def test_interpolation_target_predictions_and_loss():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x0 = jax.random.normal(k1, (4, 2, 3, 3, 2))
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([0.0, 0.25, 0.7, 1.0])
    xt = flow.flow_interpolate(x0, eps=eps, t=t)
    np.testing.assert_allclose(xt[0], x0[0], atol=1e-15)
    np.testing.assert_allclose(xt[3], eps[3], atol=1e-15)
    # The target is the time derivative of the (linear) path.
    h = 1e-3
    d = (
        flow.flow_interpolate(x0, eps=eps, t=t + h) - flow.flow_interpolate(x0, eps=eps, t=t - h)
    ) / (2 * h)
    np.testing.assert_allclose(d, flow.flow_target(x0, eps), atol=1e-10)
    # With the true velocity, x0 and eps are recovered from (x_t, t).
    pred = flow.flow_predictions(flow.flow_target(x0, eps), xt, t)
    np.testing.assert_allclose(pred["x0"], x0, atol=1e-12)
    np.testing.assert_allclose(pred["eps"], eps, atol=1e-12)
    # Per-example loss: zero at the target, mean squared error over non-batch axes otherwise.
    v = flow.flow_target(x0, eps)
    np.testing.assert_allclose(flow.flow_loss(v, x0, eps), 0.0, atol=1e-20)
    noise = jax.random.normal(k3, x0.shape)
    loss = flow.flow_loss(v + noise, x0, eps)
    assert loss.shape == (4,)
    np.testing.assert_allclose(loss, jnp.mean(noise**2, axis=(1, 2, 3, 4)), rtol=1e-12)


def test_logit_normal_and_shift():
    assert flow.shift_for_resolution(64 * 64, 32 * 32) == pytest.approx(2.0)
    assert flow.shift_for_resolution(256, 256) == 1.0
    with pytest.raises(ValueError, match="must be > 0"):
        flow.shift_for_resolution(0, 10)
    u = jnp.linspace(0, 1, 11)
    np.testing.assert_allclose(flow.shift_time(u, 1.0), u, atol=1e-15)
    np.testing.assert_allclose(flow.shift_time(jnp.array([0.0, 1.0]), 3.0), [0.0, 1.0])
    assert float(flow.shift_time(0.5, 3.0)) == pytest.approx(0.75)
    assert np.all(np.diff(flow.shift_time(u, 3.0)) > 0)

    key = jax.random.PRNGKey(1)
    n = 200_000
    t = flow.sample_t_logit_normal(key, (n,), dtype=jnp.float64)
    assert float(jnp.min(t)) > 0 and float(jnp.max(t)) < 1
    assert float(jnp.median(t)) == pytest.approx(0.5, abs=0.01)
    m, s, a = 0.5, 0.8, 3.0
    ts = flow.sample_t_logit_normal(key, (n,), m, s, shift=a, dtype=jnp.float64)
    med = a * (1 / (1 + math.exp(-m))) / (1 + (a - 1) / (1 + math.exp(-m)))
    assert float(jnp.median(ts)) == pytest.approx(med, abs=0.01)
    # Quantile q of N(0,1) maps to shift(sigmoid(m + s q)): P(t < that) = Phi(q).
    q, phi_q = 1.0, 0.8413447460685429
    thr = flow.shift_time(1 / (1 + math.exp(-(m + s * q))), a)
    assert float(jnp.mean(ts < thr)) == pytest.approx(phi_q, abs=0.005)


@pytest.fixture(scope="module")
def solvers():
    with jax.enable_x64(True):
        make = lambda fn, shift: jax.jit(
            functools.partial(fn, exact_velocity, (B, 2), shift=shift, dtype=jnp.float64)
        )
        return {
            (name, shift): make(fn, shift)
            for name, fn in (("euler", flow.euler_sample), ("heun", flow.heun_sample))
            for shift in (1.0, 3.0)
        }


def test_euler_recovers_data_distribution(solvers):
    key = jax.random.PRNGKey(2)
    for shift in (1.0, 3.0):
        x = np.asarray(solvers["euler", shift](key, steps=256))
        assert abs(x.mean() - MU) < 4 * S / math.sqrt(x.size), shift
        assert abs(x.std() - S) < 0.01, shift
    assert solvers["euler", 1.0]._cache_size() == 1  # one compiled loop for any steps


def test_heun_more_accurate_than_euler(solvers):
    key = jax.random.PRNGKey(3)
    z1 = jax.random.normal(key, (B, 2), jnp.float64)
    exact = MU + S * z1

    def err(name, shift, steps):
        x = solvers[name, shift](key, steps=steps, z_init=z1)
        return float(jnp.mean(jnp.abs(x - exact)))

    for shift in (1.0, 3.0):
        e = {(n, k): err(n, shift, k) for n in ("euler", "heun") for k in (8, 16, 32)}
        for k in (8, 16, 32):
            assert e["heun", k] < 0.3 * e["euler", k], (shift, e)
        # Orders: Euler halves its error when steps double, Heun divides it by about four.
        assert 1.6 < e["euler", 16] / e["euler", 32] < 2.4, e
        assert e["heun", 16] / e["heun", 32] > 3.0, e
        assert e["heun", 32] < 5e-3, e


def test_flow_cfg_with_velocity_fn():
    """CFG wraps a velocity model through the same guidance helper (raw-output combination)."""

    def model_fn(z, t, label):
        return exact_velocity(z, t) + jnp.where(label == 5, 0.0, 0.2)[:, None]

    lab = jnp.zeros((B,), jnp.int32)
    key = jax.random.PRNGKey(4)
    z1 = jax.random.normal(key, (B, 2), jnp.float64)
    run = lambda fn: flow.euler_sample(fn, (B, 2), key, 64, z_init=z1)
    cond = run(lambda z, t: model_fn(z, t, lab))
    g0 = run(guidance.cfg_denoise_fn(model_fn, 0.0, 5, lab))
    np.testing.assert_allclose(g0, cond, atol=1e-12)
    # w = 2 integrates the combined field 3 v_c - 2 v_u, all in one batched call per step.
    g2 = run(guidance.cfg_denoise_fn(model_fn, 2.0, 5, lab))
    null = jnp.full_like(lab, 5)
    ref = run(lambda z, t: 3.0 * model_fn(z, t, lab) - 2.0 * model_fn(z, t, null))
    np.testing.assert_allclose(g2, ref, atol=1e-12)
    assert float(jnp.mean(g2 - cond)) < -0.1  # moved away from the unconditional offset
