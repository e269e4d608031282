"""PSNR / SSIM against a float64 numpy implementation of the formulas and tf.image."""

import numpy as np
import pytest

from cascade.evaluation import frames


def _np_ssim(x, y, data_range, win=11, sigma=1.5):
    """SSIM of one [H, W] image pair from the definition: explicit 2-D Gaussian window
    sums at every VALID position, float64 (Wang et al. 2004)."""
    g = np.exp(-((np.arange(win) - (win - 1) / 2) ** 2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    h, wd = x.shape
    out = np.empty((h - win + 1, wd - win + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            px, py = x[i : i + win, j : j + win], y[i : i + win, j : j + win]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cov = (w * (px - mx) * (py - my)).sum()
            out[i, j] = ((2 * mx * my + c1) * (2 * cov + c2)) / (
                (mx**2 + my**2 + c1) * (vx + vy + c2)
            )
    return out.mean()


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:20] / 10.0
    base = np.stack([np.sin(3 * xx + yy), np.cos(2 * yy), np.sin(xx * yy)], -1)
    target = np.stack([np.roll(base, t, axis=1) for t in range(3)])[None]  # [1, 3, 24, 20, 3]
    target = np.concatenate([target, -target])  # [2, 3, 24, 20, 3]
    pred = np.clip(target + rng.normal(0, 0.1, target.shape), -1, 1)
    return pred.astype(np.float32), np.clip(target, -1, 1).astype(np.float32)


def test_psnr_matches_definition(pair):
    pred, target = pair
    got = np.asarray(frames.psnr(pred, target))
    mse = ((pred.astype(np.float64) - target) ** 2).mean(axis=(-3, -2, -1))
    np.testing.assert_allclose(got, 10 * np.log10(4.0 / mse), rtol=1e-5)
    assert got.shape == (2, 3)
    assert np.isinf(float(frames.psnr(target[0, 0], target[0, 0])))
    # [-1, 1] with range 2 == [0, 1] with range 1 == uint8-scale with range 255.
    unit = np.asarray(frames.psnr((pred + 1) / 2, (target + 1) / 2, data_range=1.0))
    np.testing.assert_allclose(unit, got, rtol=1e-5)


def test_ssim_matches_float64_reference_and_tf(pair):
    pred, target = ((x + 1) / 2 for x in pair)  # SSIM is defined on non-negative intensities
    got = np.asarray(frames.ssim(pred, target))
    assert got.shape == (2, 3)
    for b, t in [(0, 0), (1, 2)]:
        ref = np.mean(
            [
                _np_ssim(pred[b, t, ..., c].astype(np.float64), target[b, t, ..., c], 1.0)
                for c in range(3)
            ]
        )
        assert got[b, t] == pytest.approx(ref, abs=2e-5)
    assert np.asarray(frames.ssim(target, target)) == pytest.approx(1.0, abs=1e-6)
    # uint8-scale with range 255 is the same SSIM (SSIM is scale-invariant).
    scaled = np.asarray(frames.ssim(255 * pred, 255 * target, data_range=255.0))
    np.testing.assert_allclose(scaled, got, atol=1e-5)
    tf = pytest.importorskip("tensorflow")
    want = tf.image.ssim(
        tf.constant(pred), tf.constant(target), max_val=1.0, filter_size=11, filter_sigma=1.5
    ).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_frame_metrics_per_frame_and_per_clip(pair):
    pred, target = pair  # [-1, 1]
    m = frames.frame_metrics(pred, target)
    assert m["psnr_frame"].shape == m["ssim_frame"].shape == (2, 3)
    # PSNR on [-1, 1] with range 2; SSIM on the frames mapped to [0, 1].
    np.testing.assert_allclose(
        m["psnr_frame"], frames.psnr(pred, target, data_range=2.0), rtol=1e-5
    )
    np.testing.assert_allclose(
        m["ssim_frame"], frames.ssim((pred + 1) / 2, (target + 1) / 2), atol=1e-6
    )
    np.testing.assert_allclose(m["psnr_clip"], np.asarray(m["psnr_frame"]).mean(1), rtol=1e-6)
    np.testing.assert_allclose(float(m["ssim"]), np.asarray(m["ssim_frame"]).mean(), rtol=1e-6)
    # More noise, lower scores.
    worse = frames.frame_metrics(np.clip(2 * pred - target, -1, 1), target)
    assert float(worse["psnr"]) < float(m["psnr"]) and float(worse["ssim"]) < float(m["ssim"])
    with pytest.raises(ValueError, match="11x11"):
        frames.ssim(pred[..., :8, :8, :], target[..., :8, :8, :])


def test_sr_scores_cap_an_exact_frame_at_the_uint8_ceiling(pair):
    """One exactly copied frame must not make a baseline's mean PSNR +inf (it would outrank
    every model); it counts as the 8-bit quantization limit, 10 log10(12 * 255^2) dB."""
    from cascade.evaluation.evaluate import _frame_scores

    pred, target = pair
    exact = pred.copy()
    exact[0, 1] = target[0, 1]
    per_frame = np.asarray(frames.frame_metrics(exact, target)["psnr_frame"], np.float64)
    assert np.isinf(per_frame[0, 1])
    per_frame[0, 1] = 10 * np.log10(12 * 255.0**2)
    scores = _frame_scores(exact, target)
    np.testing.assert_allclose(scores["psnr"], per_frame.mean(), rtol=1e-6)
    assert np.isclose(frames.UINT8_PSNR_CEILING, 58.9226, atol=1e-3)
