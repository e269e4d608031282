"""Guidance against closed forms, in float64: classifier-free guidance, and VDM reconstruction
guidance for conditional sampling (frames given) and spatial super-resolution, with exact
denoisers of correlated Gaussian "frames"."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cascade.diffusion import gaussian, guidance, samplers, schedules

COS = schedules.get_schedule("cosine")


@pytest.fixture(autouse=True)
def _x64():
    # Scoped to each test of this file: float64 must not leak into other test files.
    with jax.enable_x64(True):
        yield


def correlated_denoiser(s, rho, parametrization="x0"):
    """Exact x0-denoiser for two 'frames' x [B, 2, 1] ~ N(0, s^2 [[1, rho], [rho, 1]]).

    Diagonal in the basis (x0 + x1, x0 - x1)/sqrt(2) with eigenvalues s^2 (1 +- rho).
    """

    def fn(z, logsnr):
        a, sg = schedules.alpha_sigma(gaussian.bcast(logsnr, z))
        plus = (z[:, 0:1] + z[:, 1:2]) / 2
        minus = (z[:, 0:1] - z[:, 1:2]) / 2
        lp, lm = s**2 * (1 + rho), s**2 * (1 - rho)
        gp, gm = a * lp / (a**2 * lp + sg**2), a * lm / (a**2 * lm + sg**2)
        x_hat = jnp.concatenate([gp * plus + gm * minus, gp * plus - gm * minus], axis=1)
        return gaussian.predictions(x_hat, z, logsnr=logsnr, parametrization="x0")[parametrization]

    return fn


def test_classifier_free_guidance():
    calls = []

    def model_fn(z, logsnr, label):
        calls.append(z.shape[0])
        # A "conditional" v-model: shifts by the label, null label 10 gives no shift.
        shift = jnp.where(label == 10, 0.0, label.astype(z.dtype))
        return z * 0.5 + gaussian.bcast(shift + logsnr, z)

    z = jax.random.normal(jax.random.PRNGKey(10), (4, 3, 2))
    lam = jnp.array([-1.0, 0.0, 1.0, 2.0])
    lab = jnp.array([1, 2, 3, 4])
    cond = model_fn(z, lam, lab)
    uncond = model_fn(z, lam, jnp.full((4,), 10))
    calls.clear()
    out0 = guidance.cfg_denoise_fn(model_fn, 0.0, 10, lab)(z, lam)
    assert calls == [8]  # one batched call on cond + uncond
    np.testing.assert_allclose(out0, cond, atol=1e-12)
    outm1 = guidance.cfg_denoise_fn(model_fn, -1.0, 10, lab)(z, lam)
    np.testing.assert_allclose(outm1, uncond, atol=1e-12)
    w = 2.5
    raw = guidance.cfg_denoise_fn(model_fn, w, 10, lab)(z, lam)
    np.testing.assert_allclose(raw, (1 + w) * cond - w * uncond, atol=1e-12)
    # Guiding eps and converting back to v is the same as guiding the raw v output.
    in_eps = guidance.cfg_denoise_fn(model_fn, w, 10, lab, parametrization="v")(z, lam)
    np.testing.assert_allclose(in_eps, raw, atol=1e-10)

    labels = jnp.arange(100_000) % 10
    dropped = guidance.drop_labels(labels, 0.2, jax.random.PRNGKey(11), 10)
    frac = float(jnp.mean(dropped == 10))
    assert abs(frac - 0.2) < 0.01
    kept = dropped != 10
    np.testing.assert_array_equal(dropped[kept], labels[kept])


def test_reconstruction_guidance_conditional_sampling():
    """Two correlated frames; frame 0 known. Replacement alone is biased (VDM sec. 3.1);
    reconstruction guidance brings the conditional moments of frame 1 close to the truth."""
    s, rho, xa = 0.8, 0.9, 1.5
    denoise = correlated_denoiser(s, rho)
    n = 20_000
    x_a = jnp.zeros((n, 2, 1)).at[:, 0, 0].set(xa)
    mask = guidance.frame_mask(2, [0], ndim=3)
    true_mean, true_std = rho * xa, s * math.sqrt(1 - rho**2)

    # Local check: a guided DDIM step moves the model's prediction of the known frame towards
    # x_a (unguided: replacement only).
    lam = jnp.full((n,), 0.0)
    a, sg = schedules.alpha_sigma(lam[0])
    k = jax.random.split(jax.random.PRNGKey(12), 2)
    xs = jax.random.normal(k[0], (n, 2, 1)) * s
    z = a * xs.at[:, 0, 0].set(xa) + sg * jax.random.normal(k[1], (n, 2, 1))
    lam_s = jnp.full((n,), 2.0)

    def err_after_step(w_r):
        fn = guidance.reconstruction_guidance(denoise, x_a, w_r, parametrization="x0", mask=mask)
        pred = gaussian.predictions(fn(z, lam), z, logsnr=lam, parametrization="x0")
        np.testing.assert_allclose(pred["x0"][:, 0], xa)  # known frame replaced
        z_s = samplers.ddim_step(z, pred, logsnr_s=lam_s)
        return float(jnp.mean(jnp.square(denoise(z_s, lam_s)[:, 0] - xa)))

    errs = [err_after_step(w) for w in (0.0, 1.0, 2.0, 4.0)]
    assert all(e1 < e0 for e0, e1 in zip(errs, errs[1:], strict=False)), errs  # monotone in w_r
    assert errs[-1] < 0.6 * errs[0], errs

    denoise_v = correlated_denoiser(s, rho, "v")

    def moments(w_r):
        fn = guidance.reconstruction_guidance(denoise_v, x_a, w_r, parametrization="v", mask=mask)
        x = samplers.sample(
            fn, (n, 2, 1), jax.random.PRNGKey(13), steps=128, sampler="ddpm", schedule=COS,
            parametrization="v", clip_x0=False, dtype=jnp.float64,
        )  # fmt: skip
        np.testing.assert_allclose(x[:, 0], xa, atol=1e-8)
        return float(jnp.mean(x[:, 1])), float(jnp.std(x[:, 1]))

    m0, s0 = moments(0.0)
    m2, s2 = moments(2.0)
    assert abs(m0 - true_mean) > 0.3  # replacement: far from the true conditional mean
    assert abs(m2 - true_mean) < 0.5 * abs(m0 - true_mean)
    assert abs(s2 - true_std) < 0.5 * abs(s0 - true_std)


def test_reconstruction_guidance_spatial_sr():
    """Super-resolution variant: the error is measured on a downsampled prediction."""
    s, rho = 0.8, 0.5
    denoise = correlated_denoiser(s, rho, "eps")  # two "pixels" of one high-res signal
    down = lambda x: jnp.mean(x, axis=1, keepdims=True)  # 2 -> 1 pixel (area filter)
    n = 4096
    low = jnp.full((n, 1, 1), 0.9)
    err = lambda x: float(jnp.mean(jnp.square(down(x) - low)))
    x0_of = lambda fn, z, lam: gaussian.predictions(
        fn(z, lam), z, logsnr=lam, parametrization="eps"
    )["x0"]
    guided = lambda w: guidance.reconstruction_guidance(
        denoise, low, w, parametrization="eps", downsample=down
    )
    z = jax.random.normal(jax.random.PRNGKey(14), (n, 2, 1))
    lam = jnp.full((n,), -1.0)
    local = [err(x0_of(guided(w), z, lam)) for w in (0.0, 1.0, 2.0)]
    assert local[0] == pytest.approx(err(x0_of(denoise, z, lam)), rel=1e-12)  # w_r = 0: no-op
    assert local[2] < local[1] < local[0], local

    def sample(fn_):
        return samplers.sample(
            fn_, (n, 2, 1), jax.random.PRNGKey(15), steps=64, sampler="ddpm", schedule=COS,
            parametrization="eps", clip_x0=False, dtype=jnp.float64,
        )  # fmt: skip

    # Unguided samples ignore the low-res input; guided ones reproduce it closely.
    assert err(sample(guided(1.0))) < 0.01 * err(sample(denoise))
