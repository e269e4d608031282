"""Gaussian diffusion math against closed forms, in float64.

Denoisers are exact: for Gaussian data x ~ N(mu, s^2) the optimal x-predictor is
E[x | z] = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (z - alpha mu), and the probability-flow
ODE maps z_1 to mu + s (z_1 - alpha_1 mu) / sqrt(alpha_1^2 s^2 + sigma_1^2) exactly.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cascade.diffusion import gaussian, samplers, schedules

MU, S = 0.3, 0.5
PARAMS = ("eps", "x0", "v")


@pytest.fixture(autouse=True)
def _x64():
    # Scoped to each test of this file: float64 must not leak into other test files.
    with jax.enable_x64(True):
        yield


def gaussian_denoiser(mu, s, parametrization="v"):
    """Exact denoiser for data N(mu, s^2) (elementwise), output in `parametrization`."""

    def fn(z, logsnr):
        a, sg = schedules.alpha_sigma(gaussian.bcast(logsnr, z))
        x_hat = mu + a * s**2 / (a**2 * s**2 + sg**2) * (z - a * mu)
        return gaussian.predictions(x_hat, z, logsnr=logsnr, parametrization="x0")[parametrization]

    return fn


# ---------------------------------------------------------------------------------- schedules
def test_schedules_endpoints_shift_and_errors():
    t = jnp.linspace(0.0, 1.0, 1001)
    cos = schedules.get_schedule("cosine")
    lam = cos(t)
    np.testing.assert_allclose([lam[0], lam[-1]], [20.0, -20.0], atol=1e-9)
    assert np.all(np.diff(lam) < 0)
    assert abs(float(cos(0.5))) < 1e-9  # symmetric range: u = pi / 4
    # Interior of the clipped cosine follows -2 log tan(pi t / 2) closely.
    ti = jnp.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(cos(ti), -2 * np.log(np.tan(np.pi * ti / 2)), atol=1e-3)
    # Resolution shift: endpoints still hit the clip, interior moves down by 2 log(shift).
    cos2 = schedules.get_schedule("cosine", shift=2.0)
    np.testing.assert_allclose([cos2(0.0), cos2(1.0)], [20.0, -20.0], atol=1e-9)
    np.testing.assert_allclose(cos2(ti), cos(ti) - 2 * math.log(2.0), atol=1e-3)

    lin = schedules.get_schedule("linear", logsnr_min=-5.0, logsnr_max=13.3)
    np.testing.assert_allclose(lin(t), 13.3 + t * (-18.3), atol=1e-12)

    # beta_linear is DDPM's 1000-step linear betas (1e-4 .. 0.02) in the continuous limit.
    bl = schedules.get_schedule("beta_linear", logsnr_min=-10.0, logsnr_max=20.0)
    np.testing.assert_allclose([bl(0.0), bl(1.0)], [20.0, -10.0], atol=1e-8)
    alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    k = np.array([50, 200, 500, 800])  # s = (k + 1) / 1000 in the continuous time of the SDE

    def s_of(lam):  # inverse of the remap: B = softplus(-lam), quadratic in s
        b = math.log1p(math.exp(-lam))
        return (-0.1 + math.sqrt(0.01 + 2 * 19.9 * b)) / 19.9

    s_min, s_max = s_of(20.0), s_of(-10.0)
    t_k = ((k + 1) / 1000 - s_min) / (s_max - s_min)
    lam_ddpm = np.log(alpha_bar[k] / (1 - alpha_bar[k]))
    # log(1 - beta) = -beta - beta^2 / 2 - ...: the continuous limit drops O(beta^2) terms.
    np.testing.assert_allclose(bl(jnp.asarray(t_k)), lam_ddpm, rtol=0.01)

    a, s = schedules.alpha_sigma(lam)
    np.testing.assert_allclose(a**2 + s**2, 1.0, atol=1e-12)
    np.testing.assert_allclose(schedules.logsnr_from_alpha_sigma(a, s), lam, atol=1e-8)

    with pytest.raises(ValueError, match="allowed.*beta_linear.*cosine.*linear"):
        schedules.get_schedule("sigmoid")
    with pytest.raises(ValueError, match="unknown keywords.*'gamma'.*accepted"):
        schedules.get_schedule("cosine", gamma=1.0)
    with pytest.raises(ValueError, match="logsnr_min < logsnr_max"):
        schedules.get_schedule("linear", logsnr_min=3.0, logsnr_max=1.0)

    tt = schedules.uniform_t(jax.random.PRNGKey(0), 8)
    np.testing.assert_allclose(np.sort(np.diff(np.sort(tt))), 1 / 8, atol=1e-12)


# ------------------------------------------------------------------------ forward / posterior
def test_q_sample_moments_and_v_identity():
    key = jax.random.PRNGKey(1)
    x = jnp.array([0.7, -0.2, 0.0])
    lam = jnp.array([-3.0, 0.5, 4.0])
    n = 200_000
    # Batch axis = the three (x, lambda) pairs; trailing axis = n noise draws.
    eps = jax.random.normal(key, (3, n), jnp.float64)
    z = gaussian.q_sample(jnp.broadcast_to(x[:, None], (3, n)), eps=eps, logsnr=lam)
    a, s = schedules.alpha_sigma(lam)
    np.testing.assert_array_less(np.abs(z.mean(1) - a * x), 5 * s / math.sqrt(n))
    np.testing.assert_allclose(z.var(1), s**2, rtol=0.02)

    # v = alpha eps - sigma x, and z, v are an orthogonal rotation of (x, eps).
    xb = jax.random.normal(jax.random.PRNGKey(2), (5, 4, 3))
    eb = jax.random.normal(jax.random.PRNGKey(3), (5, 4, 3))
    lb = jnp.linspace(-20.0, 20.0, 5)
    v = gaussian.target_for("v", x=xb, eps=eb, logsnr=lb)
    ab, sb = schedules.alpha_sigma(lb[:, None, None])
    np.testing.assert_allclose(v, ab * eb - sb * xb, atol=1e-14)
    zb = gaussian.q_sample(xb, eps=eb, logsnr=lb)
    np.testing.assert_allclose(zb**2 + v**2, xb**2 + eb**2, atol=1e-12)


def test_predictions_round_trip_all_parametrizations():
    k1, k2 = jax.random.split(jax.random.PRNGKey(4))
    x = jax.random.normal(k1, (7, 2, 3, 3, 1))
    eps = jax.random.normal(k2, x.shape)
    lam = jnp.linspace(-20.0, 20.0, 7)
    z = gaussian.q_sample(x, eps=eps, logsnr=lam)
    truth = {"x0": x, "eps": eps, "v": gaussian.target_for("v", x=x, eps=eps, logsnr=lam)}
    a, _ = schedules.alpha_sigma(lam)
    for p in PARAMS:
        out = gaussian.target_for(p, x=x, eps=eps, logsnr=lam)
        pred = gaussian.predictions(out, z, logsnr=lam, parametrization=p)
        for name in PARAMS:
            # 1/alpha (or 1/sigma) amplifies round-off by ~2e4 at |lambda| = 20.
            np.testing.assert_allclose(pred[name], truth[name], atol=1e-10, err_msg=f"{p}->{name}")
    # Chain eps -> x0 -> v -> eps through the three parametrizations.
    p1 = gaussian.predictions(eps, z, logsnr=lam, parametrization="eps")
    p2 = gaussian.predictions(p1["x0"], z, logsnr=lam, parametrization="x0")
    p3 = gaussian.predictions(p2["v"], z, logsnr=lam, parametrization="v")
    np.testing.assert_allclose(p3["eps"], eps, atol=1e-10)
    # Clipping keeps the three views consistent with z.
    pc = gaussian.predictions(3.0 * eps, z, logsnr=lam, parametrization="eps", clip_x0=True)
    assert float(jnp.max(jnp.abs(pc["x0"]))) <= 1.0
    np.testing.assert_allclose(
        gaussian.q_sample(pc["x0"], eps=pc["eps"], logsnr=lam), z, atol=1e-10
    )
    with pytest.raises(ValueError, match="allowed.*'eps', 'x0', 'v'"):
        gaussian.predictions(eps, z, logsnr=lam, parametrization="score")
    assert a.shape == (7,)


def test_posterior_matches_gaussian_conditioning():
    # Joint of (z_s, z_t) given x: z_s = a_s x + s_s e1, z_t = a_ts z_s + s_ts e2.
    lt = jnp.array([-20.0, -5.0, -1.0, 0.0, 2.0, 7.0])
    ls = lt + jnp.array([0.01, 1.0, 3.0, 0.5, 10.0, 13.0])
    x = jnp.linspace(-1, 1, 6)
    z_t = jnp.linspace(-2, 2, 6)
    a_t, s_t = schedules.alpha_sigma(lt)
    a_s, s_s = schedules.alpha_sigma(ls)
    a_ts = a_t / a_s
    s2_ts = s_t**2 - a_ts**2 * s_s**2
    cov_st = a_ts * s_s**2  # Cov(z_s, z_t | x)
    mean_ref = a_s * x + cov_st / s_t**2 * (z_t - a_t * x)
    var_ref = s_s**2 - cov_st**2 / s_t**2
    mean, var = gaussian.posterior_mean_var(z_t, x, logsnr_t=lt, logsnr_s=ls)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var, var_ref, rtol=1e-8, atol=1e-14)
    # VDM's variance interpolation: gamma = 0 is the posterior, gamma = 1 the forward variance.
    np.testing.assert_allclose(
        jnp.exp(gaussian.ancestral_log_variance(logsnr_t=lt, logsnr_s=ls, gamma=0.0)),
        var_ref,
        rtol=1e-8,
    )
    np.testing.assert_allclose(
        jnp.exp(gaussian.ancestral_log_variance(logsnr_t=lt, logsnr_s=ls, gamma=1.0)),
        s2_ts,
        rtol=1e-8,
    )


def test_loss_weightings_relations():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
    x = jax.random.normal(k1, (6, 2, 4, 4, 1))
    eps = jax.random.normal(k2, x.shape)
    lam = jnp.array([-8.0, -2.0, -0.1, 0.1, 3.0, 9.0])
    snr = jnp.exp(lam)
    z = gaussian.q_sample(x, eps=eps, logsnr=lam)
    eps_hat = eps + 0.3 * jax.random.normal(k3, x.shape)  # an imperfect model
    pred = gaussian.predictions(eps_hat, z, logsnr=lam, parametrization="eps")
    x_mse = jnp.mean(jnp.square(pred["x0"] - x), axis=(1, 2, 3, 4))
    expected = {
        "eps_mse": snr * x_mse,
        "v_mse": (1 + snr) * x_mse,
        "snr_trunc": jnp.maximum(snr, 1.0) * x_mse,
        "x0_mse": x_mse,
    }
    for p in PARAMS:
        out = pred[p]
        for w, ref in expected.items():
            loss = gaussian.diffusion_loss(
                out, x=x, eps=eps, logsnr=lam, parametrization=p, weighting=w
            )
            assert loss.shape == (6,)
            np.testing.assert_allclose(loss, ref, rtol=1e-9, err_msg=f"{p}/{w}")
        perfect = gaussian.target_for(p, x=x, eps=eps, logsnr=lam)
        np.testing.assert_allclose(
            gaussian.diffusion_loss(
                perfect, x=x, eps=eps, logsnr=lam, parametrization=p, weighting="snr_trunc"
            ),
            0.0,
            atol=1e-18,
        )
    with pytest.raises(ValueError, match="weighting.*allowed"):
        gaussian.diffusion_loss(
            eps, x=x, eps=eps, logsnr=lam, parametrization="eps", weighting="l1"
        )


# ------------------------------------------------------------------------------------ samplers
B = 20_000
COS = schedules.get_schedule("cosine")


@pytest.fixture(scope="module")
def sample_fns():
    """One jitted sampler per (sampler, final_x0); steps are traced (one compile each)."""
    fn = gaussian_denoiser(MU, S, "v")
    make = lambda **kw: jax.jit(
        functools.partial(
            samplers.sample, fn, (B, 2), schedule=COS, clip_x0=False, dtype=jnp.float64, **kw
        )
    )
    return {
        "ddpm": make(sampler="ddpm"),
        "ddim": make(sampler="ddim"),
        "ddim_z0": make(sampler="ddim", final_x0=False),
        "invert": jax.jit(functools.partial(samplers.ddim_invert, fn, schedule=COS)),
    }


def test_samplers_recover_gaussian_data(sample_fns):
    key = jax.random.PRNGKey(6)
    for name in ("ddpm", "ddim"):
        x = np.asarray(sample_fns[name](key, steps=256))
        se = S / math.sqrt(x.size)
        assert abs(x.mean() - MU) < 4 * se + 2e-3, name
        assert abs(x.std() - S) < 0.01, name
    # DDIM follows the probability-flow ODE: first-order convergence to the exact map.
    z1 = jax.random.normal(key, (B, 2), jnp.float64)
    a1, s1 = schedules.alpha_sigma(COS(1.0))
    exact = MU + S * (z1 - a1 * MU) / jnp.sqrt(a1**2 * S**2 + s1**2)
    errs = [
        float(jnp.mean(jnp.abs(sample_fns["ddim"](key, steps=n, z_init=z1) - exact)))
        for n in (64, 256)
    ]
    assert errs[1] < 5e-3 and 3.0 < errs[0] / errs[1] < 5.0, errs
    # Both samplers compiled a single loop whatever the number of steps.
    assert sample_fns["ddpm"]._cache_size() == 1


def test_ddim_deterministic_and_invertible(sample_fns):
    k1, k2 = jax.random.PRNGKey(7), jax.random.PRNGKey(8)
    z1 = jax.random.normal(k1, (B, 2), jnp.float64)
    a = sample_fns["ddim"](k1, steps=16, z_init=z1)
    b = sample_fns["ddim"](k2, steps=16, z_init=z1)
    np.testing.assert_array_equal(a, b)  # eta = 0: the key does not matter
    c = sample_fns["ddpm"](k1, steps=16, z_init=z1)
    d = sample_fns["ddpm"](k2, steps=16, z_init=z1)
    assert float(jnp.max(jnp.abs(c - d))) > 0.1

    # Round trip invert(sample(z)) -> z: error shrinks like 1/steps.
    errs = []
    for n in (64, 256):
        z0 = sample_fns["ddim_z0"](k1, steps=n, z_init=z1)
        errs.append(float(jnp.mean(jnp.abs(sample_fns["invert"](z0, steps=n) - z1))))
    assert errs[1] < 0.01 and errs[0] / errs[1] > 3.0, errs

    # With an x-prediction that does not depend on z (point-mass data) DDIM is exact both ways.
    point = gaussian_denoiser(MU, 0.0, "eps")
    small = z1[:64]
    z0 = samplers.sample(
        point, small.shape, k1, steps=10, sampler="ddim", schedule=COS, parametrization="eps",
        clip_x0=False, z_init=small, final_x0=False,
    )  # fmt: skip
    back = samplers.ddim_invert(point, z0, steps=10, schedule=COS, parametrization="eps")
    np.testing.assert_allclose(back, small, atol=1e-10)


def test_ddim_eta1_equals_ddpm_gamma0_and_shapes():
    fn = gaussian_denoiser(MU, S, "eps")
    key = jax.random.PRNGKey(9)
    shape = (3, 2, 4, 4, 1)  # arbitrary [B, ...] video shape
    common = dict(steps=12, schedule=COS, parametrization="eps", dtype=jnp.float64)
    a = samplers.sample(fn, shape, key, sampler="ddim", eta=1.0, clip_x0=False, **common)
    b = samplers.sample(fn, shape, key, sampler="ddpm", gamma=0.0, clip_x0=False, **common)
    np.testing.assert_allclose(a, b, atol=1e-10)
    c = samplers.sample(fn, shape, key, sampler="ddpm", gamma=0.3, clip_x0=True, **common)
    assert c.shape == shape and float(jnp.max(jnp.abs(c))) <= 1.0
    with pytest.raises(ValueError, match="allowed.*ddpm.*ddim"):
        samplers.sample(fn, shape, key, steps=2, sampler="euler")


def test_x0_clipped_to_per_element_bounds_keeps_eps_and_v_consistent_with_z():
    """clip_x0=(lo, hi) arrays (a residual's bounds): x^ inside them, and eps, v recomputed
    so that z = alpha x^ + sigma eps still holds."""
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(2, 3, 4)))
    out = jnp.asarray(3 * rng.normal(size=(2, 3, 4)))
    lo = jnp.asarray(rng.uniform(-2, 0, size=(2, 3, 4)))
    hi = lo + 1.0
    logsnr = jnp.array([0.5, -1.0])
    p = gaussian.predictions(out, z, logsnr=logsnr, parametrization="x0", clip_x0=(lo, hi))
    np.testing.assert_allclose(p["x0"], np.clip(out, lo, hi), atol=1e-6)
    alpha, sigma = gaussian.alpha_sigma(gaussian.bcast(logsnr, z))
    np.testing.assert_allclose(alpha * p["x0"] + sigma * p["eps"], z, atol=1e-5)
    np.testing.assert_allclose(p["v"], alpha * p["eps"] - sigma * p["x0"], atol=1e-5)
