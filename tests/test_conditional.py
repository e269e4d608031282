"""Conditional sampling (VDM sec. 3.1): replacement, reconstruction guidance, frame prediction,
autoregressive extension, on closed-form Gaussian denoisers and a tiny random-weight keyframe stage."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from flax import nnx

from cascade.configs import ConfigError
from cascade.diffusion import conditioning, gaussian, guidance, schedules
from cascade.sampling import conditional
from cascade.stages import build_stage
from cascade.stages.latent_dit import LatentDiTStage
from cascade.stages.stage import ShapeMismatchError, merge_model, model_graphdef
from cascade.training import parallel
from cascade.training.frozen_vae import FrozenVAE
from cascade.training.sampler import Sampler
from cascade.training.trained import TrainedStage

STEPS = 4  # sampler steps for the trained stage: enough to exercise the loop


# ------------------------------------------------------- closed form: a Gaussian video prior
def frame_covariance(frames: int, rho: float, s: float) -> np.ndarray:
    """AR(1) covariance over frames, s^2 rho^|i - j|; pixels independent."""
    i = np.arange(frames)
    return s**2 * rho ** np.abs(i[:, None] - i[None, :])


def posterior_matrix(cov: np.ndarray, logsnr: float) -> np.ndarray:
    """M with E[x | z_t] = M z along the time axis: alpha cov (alpha^2 cov + sigma^2 I)^-1."""
    a, sg = (float(v) for v in schedules.alpha_sigma(jnp.asarray(logsnr)))
    return a * cov @ np.linalg.inv(a**2 * cov + sg**2 * np.eye(len(cov)))


def exact_denoiser(cov: np.ndarray, parametrization: str):
    """The true denoiser of x ~ N(0, cov over frames) [B,T,H,W,C], output in `parametrization`."""
    cov = jnp.asarray(cov)

    def fn(z, logsnr):
        a, sg = schedules.alpha_sigma(logsnr[0])
        m = a * cov @ jnp.linalg.inv(a**2 * cov + sg**2 * jnp.eye(len(cov)))
        x0 = jnp.einsum("ts,bshwc->bthwc", m.astype(z.dtype), z)
        return gaussian.predictions(x0, z, logsnr=logsnr, parametrization="x0")[parametrization]

    return fn


@pytest.mark.parametrize("parametrization", ["eps", "x0", "v"])
def test_reconstruction_correction_equals_analytic_gradient(parametrization):
    """With the true denoiser x^ = M z, eq. 7's correction of the unknown frames is
    w_r alpha (M^T P (x_a - M z))_b (P: the known frames), for every parametrization, and the
    corrected prediction is the classifier-free-guided one when CFG is on."""
    t, lam, w_r, w_cfg = 4, 0.5, 3.0, 1.5
    known = np.array([True, False, True, False])
    cov_c, cov_u = frame_covariance(t, 0.9, 0.8), frame_covariance(t, 0.3, 0.8)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, t, 3, 3, 1)).astype(np.float32)
    x_a = rng.normal(size=z.shape).astype(np.float32)
    logsnr = jnp.full((2,), lam, jnp.float32)
    a = float(schedules.alpha_sigma(jnp.asarray(lam))[0])
    mask = known[None, :, None, None, None]

    def expected(m):
        x_hat = np.einsum("ts,bshwc->bthwc", m, z)
        resid = np.where(mask, x_a - x_hat, 0.0)
        x_new = x_hat + w_r * a * np.einsum("st,bshwc->bthwc", m, resid)  # M^T P resid
        return np.where(mask, x_a, x_new)

    def guided_x0(fn):
        g = guidance.reconstruction_guidance(
            fn, jnp.asarray(x_a), w_r, parametrization=parametrization, mask=mask
        )
        out = g(jnp.asarray(z), logsnr)
        return gaussian.predictions(out, z, logsnr=logsnr, parametrization=parametrization)["x0"]

    m_c = posterior_matrix(cov_c, lam)
    np.testing.assert_allclose(
        guided_x0(exact_denoiser(cov_c, parametrization)), expected(m_c), rtol=1e-4, atol=1e-4
    )

    # Classifier-free guidance: label 0 uses cov_c, the null label 1 cov_u.
    den_c, den_u = exact_denoiser(cov_c, parametrization), exact_denoiser(cov_u, parametrization)

    def model_fn(zz, level, label):
        cond = gaussian.bcast(label == 0, zz)
        return jnp.where(cond, den_c(zz, level), den_u(zz, level))

    cfg = guidance.cfg_denoise_fn(
        model_fn, w_cfg, 1, jnp.zeros((2,), jnp.int32), parametrization=parametrization
    )
    m_g = (1 + w_cfg) * m_c - w_cfg * posterior_matrix(cov_u, lam)
    np.testing.assert_allclose(guided_x0(cfg), expected(m_g), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("sampler", "parametrization"), [("ddpm", "v"), ("ddim", "eps"), ("ddim", "x0")]
)
def test_sample_given_moves_unknown_frames_towards_the_true_conditional(sampler, parametrization):
    """Two frames, x ~ N(0, s^2 [[1, rho], [rho, 1]]), frame 0 known = x_a: both methods return
    x_a exactly; reconstruction guidance brings frame 1's mean nearer rho x_a than
    replacement does (VDM sec. 3.1: replacement alone is poorly coherent)."""
    s, rho, xa, n = 0.8, 0.9, 1.5, 2000
    den = exact_denoiser(frame_covariance(2, rho, s), parametrization)
    x_known = jnp.full((n, 2, 1, 1, 1), xa, jnp.float32)
    mask = jnp.asarray([True, False])[None, :, None, None, None]

    def run(method, w_r):
        return conditioning.sample_given(
            den, x_known, mask, jax.random.key(3), method=method, w_r=w_r, steps=32,
            parametrization=parametrization, sampler=sampler, schedule=schedules.logsnr_cosine,
            clip_x0=False,
        )  # fmt: skip

    rep, rec = run("replacement", 0.0), run("reconstruction", 2.0)
    for x in (rep, rec):
        np.testing.assert_array_equal(x[:, 0], xa)
        assert np.all(np.isfinite(x))
    err_rep = abs(float(jnp.mean(rep[:, 1])) - rho * xa)
    err_rec = abs(float(jnp.mean(rec[:, 1])) - rho * xa)
    assert err_rec < 0.5 * err_rep, (err_rep, err_rec)


def test_replace_known_is_a_forward_diffused_copy():
    z = jnp.zeros((1, 3, 2, 2, 1))
    x = jnp.ones_like(z)
    noise = jnp.full_like(z, 0.5)
    mask = jnp.asarray([False, True, False])[None, :, None, None, None]
    out = conditioning.replace_known(z, x, mask, logsnr=jnp.zeros((1,)), noise=noise)
    a, s = schedules.alpha_sigma(jnp.zeros(()))
    np.testing.assert_allclose(out[:, 1], a + 0.5 * s, rtol=1e-6)
    np.testing.assert_array_equal(out[:, 0], 0.0)


def test_spatial_reconstruction_guidance_closed_form():
    """Per-pixel x ~ N(0, s^2): x^ = c z; the SR correction is w_r alpha c D^T (y - D c z)
    with D the 2x2 box mean (D^T u = u repeated / 4); w_r = 0 changes nothing."""
    s, lam, w_r = 0.7, -1.0, 2.0
    a, sg = (float(v) for v in schedules.alpha_sigma(jnp.asarray(lam)))
    c = a * s**2 / (a**2 * s**2 + sg**2)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 3, 4, 4, 1)).astype(np.float32)
    low = rng.normal(size=(2, 3, 2, 2, 1)).astype(np.float32)
    logsnr = jnp.full((2,), lam, jnp.float32)

    def den(zz, level):
        return gaussian.predictions(c * zz, zz, logsnr=level, parametrization="x0")["eps"]

    def x0_of(w):
        g = conditioning.spatial_reconstruction_guidance(
            den, jnp.asarray(low), w, high_res_shape=z.shape, parametrization="eps"
        )
        return gaussian.predictions(g(jnp.asarray(z), logsnr), z, logsnr=logsnr, parametrization="eps")["x0"]  # fmt: skip

    resid = low - np.asarray(conditioning.box_downsample(jnp.asarray(c * z), 2))
    up = np.repeat(np.repeat(resid, 2, axis=2), 2, axis=3) / 4
    np.testing.assert_allclose(x0_of(w_r), c * z + w_r * a * c * up, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x0_of(0.0), c * z, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(2, 3, 3, 3, 1\)"):
        conditioning.spatial_reconstruction_guidance(
            den, jnp.zeros((2, 3, 3, 3, 1)), 1.0, high_res_shape=z.shape, parametrization="eps"
        )


def test_extension_windows_plan_and_errors():
    assert conditional.extension_windows(16, 64, 16, 8) == 6  # VDM's 16 -> 64
    assert conditional.extension_windows(2, 4, 4, 2) == 1  # frame prediction from 2 frames
    assert conditional.extension_windows(4, 4, 4, 2) == 0
    with pytest.raises(ConfigError, match=r"target_frames=11 .* window of 4 frames and overlap 1"):
        conditional.extension_windows(4, 11, 4, 1)
    with pytest.raises(ConfigError, match=r"overlap=4 .* window of 4"):
        conditional.extension_windows(4, 8, 4, 4)
    with pytest.raises(ConfigError, match=r"overlap=0"):
        conditional.extension_windows(4, 8, 4, 0)
    with pytest.raises(ConfigError, match=r"1 frame\(s\), fewer than overlap=2"):
        conditional.extension_windows(1, 7, 4, 2)
    mask = conditional.given_frames_mask(8, first=2, every=4)
    np.testing.assert_array_equal(mask, [1, 1, 0, 0, 1, 0, 0, 0])


# ------------------------------------------------------------------ a tiny untrained stage
@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """The tiny keyframe stage (4 frames at 8x8) with random weights, as `load_trained` gives
    it. The zero-initialised output layers (temporal attention, conv_out) get noise too, so
    that frames interact: else the known frames' error would not depend on z_b at all."""
    config = tiny_config("keyframes", data_dir)
    stage = build_stage(config)
    graphdef = model_graphdef(stage)
    params = nnx.state(stage.build_model(nnx.Rngs(0)))
    rng = np.random.default_rng(0)  # numpy: one XLA compile per jax.random draw is slow
    params = jax.tree.map(lambda x: x + 0.1 * rng.standard_normal(x.shape, np.float32), params)
    mesh = parallel.make_mesh(config.mesh)
    workdir = tmp_path_factory.mktemp("keyframes")
    return TrainedStage(config, stage, graphdef, params, 0, workdir, Sampler(stage, graphdef, mesh))


def clips(trained, frames, seed=0):
    _, h, w, c = trained.stage.output_shape
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(2, frames, h, w, c)).astype(np.float32)


@pytest.mark.parametrize("method", ["replacement", "reconstruction"])
def test_given_frames_are_reproduced(trained, method):
    """First-c and every-k masks (one compile serves both): known frames come back exactly."""
    given = clips(trained, 4)
    for mask in ([True, True, False, False], [True, False, True, False]):
        out = conditional.sample_given_frames(
            trained, given, np.asarray(mask), method=method, w_r=2.0,
            key=jax.random.key(0), steps=STEPS,
        )  # fmt: skip
        assert out.shape == given.shape and np.all(np.isfinite(out))
        np.testing.assert_array_equal(out[:, mask], given[:, mask])
        assert not np.allclose(out[:, ~np.asarray(mask)], given[:, ~np.asarray(mask)])


def test_zero_w_r_is_replacement_and_guidance_changes_the_sample(trained):
    given = clips(trained, 4, seed=1)
    mask = np.asarray([True, False, False, False])
    run = lambda method, w: conditional.sample_given_frames(  # noqa: E731
        trained, given, mask, method=method, w_r=w, key=jax.random.key(5), steps=STEPS
    )
    rep = run("replacement", 0.0)
    np.testing.assert_allclose(run("reconstruction", 0.0), rep, atol=1e-4)
    assert np.abs(run("reconstruction", 5.0) - rep).max() > 1e-3


def test_guidance_gradient_is_with_respect_to_z(trained):
    """On the stage's network: the correction of the unknown frames, divided by
    -(w_r alpha / 2), is the z-gradient of the known frames' reconstruction error, checked by
    a central finite difference along a direction in the unknown frames (a gradient through
    the parameters, which the denoiser closes over, would not match it)."""
    stage = trained.stage
    p = stage.config.diffusion.parametrization
    rng = np.random.default_rng(2)
    shape = (2, *stage.output_shape)
    z = jnp.asarray(rng.normal(size=shape), jnp.float32)
    mask = jnp.asarray([True, True, False, False])[None, :, None, None, None]
    d = jnp.where(mask, 0.0, jnp.asarray(rng.normal(size=shape), jnp.float32))  # unknown only
    x_a = jnp.tile(jnp.asarray(clips(trained, 4, seed=3)), (4, 1, 1, 1, 1))
    w_r, h = 2.0, 1e-2
    c = 0.5 * w_r * float(schedules.alpha_sigma(jnp.zeros(()))[0])  # at log-SNR 0

    @jax.jit
    def guided_x0(params, zs):
        """One guided call on [z, z, z + h d, z - h d] with w_r = [w_r, 0, 0, 0] per example
        (one compile): x^ of the known frames is kept (replace_known=False) for the error."""
        cond = {"label": jnp.zeros((8,), jnp.int32)}
        den = stage.denoiser(merge_model(trained.graphdef, params), cond, jax.random.key(0))
        weights = jnp.repeat(jnp.asarray([w_r, 0.0, 0.0, 0.0]), 2)
        fn = guidance.reconstruction_guidance(
            den, x_a, weights, parametrization=p, mask=mask, replace_known=False
        )
        lam = jnp.zeros((8,), jnp.float32)
        return gaussian.predictions(fn(zs, lam), zs, logsnr=lam, parametrization=p)["x0"]

    x_guided, x_hat, x_plus, x_minus = jnp.split(
        guided_x0(trained.params, jnp.concatenate([z, z, z + h * d, z - h * d])), 4
    )
    err = lambda x: jnp.sum(jnp.where(mask, x_a[:2] - x, 0.0) ** 2)  # noqa: E731
    analytic = float(jnp.sum((x_guided - x_hat) / -c * d))
    numeric = float((err(x_plus) - err(x_minus)) / (2 * h))
    assert abs(analytic) > 1e-3  # the known frames do depend on the unknown part of z
    assert analytic == pytest.approx(numeric, rel=0.05), (analytic, numeric)


def test_predict_and_extend_one_compile_for_every_window(trained, monkeypatch):
    """Extension reaches the target length; first frames kept exactly; every window is traced
    once at the stage's shape [B, T, H, W, C] (so every window ran at that shape)."""
    traced_shapes = []
    denoiser = trained.stage.denoiser

    def spy(model, cond, key):
        fn = denoiser(model, cond, key)

        def wrapped(z, logsnr):
            traced_shapes.append(z.shape)
            return fn(z, logsnr)

        return wrapped

    monkeypatch.setattr(trained.stage, "denoiser", spy)
    first = clips(trained, 3, seed=4)
    labels = np.asarray([1, 2], np.int32)
    long = conditional.extend(
        trained, first, 3 + 4 * 3, overlap=1, method="reconstruction", w_r=2.0,
        key=jax.random.key(1), labels=labels, steps=STEPS + 1,
    )  # fmt: skip
    assert long.shape == (2, 15, 8, 8, 1) and np.all(np.isfinite(long))
    np.testing.assert_array_equal(long[:, :3], first)
    assert traced_shapes == [(2, *trained.stage.output_shape)]  # 5 windows, 1 trace
    pred = conditional.predict_frames(
        trained, first[:, :2], key=jax.random.key(2), labels=labels, steps=STEPS + 1
    )
    assert pred.shape == (2, 4, 8, 8, 1)
    np.testing.assert_array_equal(pred[:, :2], first[:, :2])
    assert len(traced_shapes) == 1  # a new mask, the same compiled window


def test_bad_conditioning_inputs(trained):
    key = jax.random.key(0)
    with pytest.raises(ConfigError, match=r"c=4 given frames needs 1 <= c < 4"):
        conditional.predict_frames(trained, clips(trained, 4), key=key)
    with pytest.raises(ConfigError, match=r"target_frames=9 .* window of 4 frames and overlap 2"):
        conditional.extend(trained, clips(trained, 4), 9, overlap=2, key=key)
    with pytest.raises(ConfigError, match=r"overlap=4"):
        conditional.extend(trained, clips(trained, 4), 8, overlap=4, key=key)
    wrong_res = np.zeros((2, 2, 16, 16, 1), np.float32)
    with pytest.raises(ShapeMismatchError, match=r"\(2, 2, 16, 16, 1\).* 8x8 frames"):
        conditional.predict_frames(trained, wrong_res, key=key)
    wrong_channels = np.zeros((2, 4, 8, 8, 3), np.float32)
    with pytest.raises(ShapeMismatchError, match=r"with 1 channel"):
        conditional.extend(trained, wrong_channels, 6, overlap=2, key=key)
    with pytest.raises(ShapeMismatchError, match=r"window is 4 frames"):
        conditional.sample_given_frames(trained, clips(trained, 3), [True] * 3, key=key)
    with pytest.raises(ConfigError, match=r"method='inpaint'.* replacement or reconstruction"):
        conditional.extend(trained, clips(trained, 4), 6, overlap=2, key=key, method="inpaint")


# ------------------------------------------- the latent DiT: replacement of given latent frames
def test_latent_dit_extends_by_replacement_with_chunked_vae_coding(data_dir, tmp_path):
    """A random-weight tiny latent DiT on a random-weight tiny causal VAE (`FrozenVAE`):
    `extend_video` encodes the given first frame, extends 1 -> 4 latent frames in windows of the
    DiT's trained shape (given latent frames kept exactly, one trace), decodes the long latent
    clip chunk by chunk; the frozen VAE's chunked encode / decode equal one pass. Other
    stages say what they cannot do."""
    vae_config = tiny_config("video_vae", data_dir)
    vae_stage = build_stage(vae_config)
    vae_params = nnx.state(vae_stage.build_model(nnx.Rngs(1)))
    frozen = FrozenVAE(
        model_graphdef(vae_stage),
        vae_params,
        vae_stage.model_config,
        tiny_config("latent_dit", data_dir).vae,
        latent_scale=1.7,
    )
    config = tiny_config("latent_dit", data_dir)
    stage = LatentDiTStage(config, vae=frozen)
    graphdef = model_graphdef(stage)
    rng = np.random.default_rng(0)
    params = nnx.state(stage.build_model(nnx.Rngs(0)))  # zero-init outputs get noise: v != 0
    params = jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape, np.float32), params)
    mesh = parallel.make_mesh(config.mesh)
    dit = TrainedStage(config, stage, graphdef, params, 0, tmp_path, Sampler(stage, graphdef, mesh))

    window, h, w, c = stage.output_shape  # 5 frames at 16x16 -> 2 latent frames
    traced = []
    velocity_fn = stage.velocity_fn
    stage.velocity_fn = lambda model, cond: (  # spy: the shape each window is traced at
        lambda z, t: (traced.append(z.shape), velocity_fn(model, cond)(z, t))[1]
    )
    first = rng.uniform(-1, 1, size=(2, 1, 16, 16, 1)).astype(np.float32)
    video, latents = conditional.extend_video(
        dit, first, 4, overlap=1, key=jax.random.key(0), labels=np.asarray([1, 2]), steps=3
    )
    assert latents.shape == (2, 4, h, w, c) and video.shape == (2, 13, 16, 16, 1)
    assert traced == [(2, window, h, w, c)]  # 3 windows, each at the trained shape, 1 trace
    np.testing.assert_array_equal(latents[:, :1], frozen.encode_long(first))
    assert np.all(np.isfinite(video)) and not np.allclose(latents[:, 1], latents[:, 0])
    np.testing.assert_allclose(video, frozen.decode(latents), atol=2e-5)  # chunked == one pass
    clip = rng.uniform(-1, 1, size=(2, 13, 16, 16, 1)).astype(np.float32)
    one_pass = frozen.moments(clip)[0] * frozen.latent_scale
    np.testing.assert_allclose(frozen.encode_long(clip), one_pass, atol=2e-5)
    # the causal VAE: the first latent frame depends on the first video frame only
    np.testing.assert_allclose(frozen.encode_long(clip[:, :1]), one_pass[:, :1], atol=2e-5)

    with pytest.raises(ConfigError, match=r"latent_dit stage samples given frames by replacement"):
        conditional.extend(
            dit, latents, 4, overlap=1, key=jax.random.key(0), method="reconstruction"
        )
    with pytest.raises(ConfigError, match=r"config.view \(4, 16, 16, 1\)"):
        conditional.extend_video(dit, clip[:, :4], 4, overlap=1, key=jax.random.key(0))
    stand_in = types.SimpleNamespace(stage=vae_stage, workdir="vae_workdir")
    with pytest.raises(ConfigError, match=r"video_vae stage, which cannot be conditioned"):
        conditional.conditionable_stage(stand_in, "replacement")


def test_mark_given_frames_border():
    frames = np.zeros((2, 3, 4, 4, 1), np.float32)  # mid-gray
    marked = conditional.mark_given_frames(frames, np.asarray([True, False, True]), width=1)
    assert marked.shape == (2, 3, 6, 6, 3) and marked.dtype == np.uint8
    np.testing.assert_array_equal(marked[:, :, 1:5, 1:5], 128)  # the picture is untouched
    for t, color in ((0, conditional.GIVEN_COLOR), (1, conditional.GENERATED_COLOR)):
        for edge in (marked[:, t, 0], marked[:, t, -1], marked[:, t, :, 0], marked[:, t, :, -1]):
            np.testing.assert_array_equal(edge, np.broadcast_to(color, edge.shape))
    with pytest.raises(ShapeMismatchError, match=r"mask has shape \(4,\)"):
        conditional.mark_given_frames(frames, np.ones(4, bool))
