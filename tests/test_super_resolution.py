"""SR stages trained on temporal windows (`sr.crop_frames`): what a training batch holds, and
that the network trained on windows samples whole clips."""

import jax
import numpy as np
import pytest
from conftest import tiny_config

from cascade import config_checks
from cascade.configs import ConfigError
from cascade.stages import build_stage
from cascade.stages.stage import merge_model, model_graphdef
from cascade.training.train_state import init_state, make_optimizer


def _clips(frames: int = 8, size: int = 16) -> dict:
    """Two clips whose every pixel holds its frame index (clip 1 offset by 100), in [-1, 1]."""
    t = np.arange(frames, dtype=np.float32)
    video = np.stack([t, t + 100]) / 1000.0
    video = np.broadcast_to(video[:, :, None, None, None], (2, frames, size, size, 1))
    return {"video": np.ascontiguousarray(video), "label": np.array([3, 5])}


@pytest.mark.parametrize("name", ["temporal_sr", "spatial_sr"])
def test_sr_trains_on_frame_windows_and_samples_whole_clips(name):
    config = config_checks.validate(tiny_config(name, "unused", **{"sr.crop_frames": 4}))
    stage = build_stage(config)
    rng = np.random.default_rng(0)
    for _ in range(5):
        batch = stage.make_batch(_clips(), rng)
        stage.check_batch(batch)  # shapes are batch_spec's: 4 frames (and crops)
        index = np.round(batch["video"][:, :, 0, 0, 0] * 1000) - np.array([[0], [100]])
        assert index.shape == (2, 4)
        np.testing.assert_array_equal(np.diff(index, axis=1), 1)  # consecutive frames
        assert index.min() >= 0 and index.max() <= 7
        if name == "temporal_sr":  # conditioning: every k-th frame of the same window
            np.testing.assert_array_equal(batch["cond"], batch["video"][:, :: config.sr.factor])
    whole = stage.eval_batch(_clips(), rng)
    assert whole["video"].shape[1] == 8 == stage.output_shape[0]

    tx = make_optimizer(config.train)
    params = jax.eval_shape(lambda key: init_state(stage, tx, key), jax.random.key(0))["params"]
    graphdef = model_graphdef(stage)
    loss = jax.eval_shape(
        lambda p, b: stage.loss(merge_model(graphdef, p), b, jax.random.key(1))[0], params, batch
    )
    assert loss.shape == ()
    videos = jax.eval_shape(
        lambda p, c: stage.sample(merge_model(graphdef, p), jax.random.key(2), c),
        params,
        stage.cond_from_batch(whole),
    )
    assert videos.shape == (2, *stage.output_shape)


def test_temporal_sr_window_must_hold_whole_upsampling_periods():
    config = tiny_config("temporal_sr", "unused", **{"sr.crop_frames": 3})  # factor 2
    with pytest.raises(ConfigError, match="crop_frames"):
        build_stage(config_checks.validate(config))


@pytest.mark.parametrize(
    "name, windows, steps, committed_hash",
    [("temporal_sr", 8, 1200, "b018a44e"), ("spatial_sr", 4, 1600, "ef9175ba")],
)
def test_experiments_keep_the_sr_stages_their_committed_runs_trained(
    name, windows, steps, committed_hash
):
    """The quickstart's presets moved to frame windows; the experiments' stages did not, so
    their workdir names (config hashes) and every seed's training stay what they were."""
    from cascade import configs
    from experiments import common

    preset = configs.load(f"{name}:quick")
    assert (preset.sr.crop_frames, preset.train.steps) == (windows, steps)
    pinned = common.stage_config(name, "quick", "unused")
    assert (pinned.sr.crop_frames, pinned.train.steps) == (0, 800)
    assert common.config_hash(pinned) == committed_hash  # the committed runs' workdir name


@pytest.mark.parametrize("name", ["temporal_sr", "spatial_sr"])
def test_residual_sr_diffuses_what_the_upsampler_gets_wrong(name):
    """With sr.residual the diffused clip is target - upsample(cond), and a network that
    predicts a zero residual (x0 parametrization, output 0) samples the upsampled input."""
    overrides = {"sr.residual": True, "diffusion.parametrization": "x0", "sr.noise_aug": False}
    if name == "temporal_sr":
        overrides["sr.upsample"] = "linear"
    stage = build_stage(config_checks.validate(tiny_config(name, "unused", **overrides)))
    rng = np.random.default_rng(0)
    batch = stage.eval_batch(
        {"video": rng.uniform(-1, 1, (2, 8, 16, 16, 1)), "label": np.zeros(2)}, rng
    )
    upsampled = np.asarray(stage.upsample(batch["cond"]))
    residual = np.asarray(stage.diffusion_target(batch))
    np.testing.assert_allclose(residual, batch["video"] - upsampled, atol=1e-6)
    cond = stage.cond_from_batch(batch)
    np.testing.assert_allclose(
        stage.from_diffusion_target(residual, cond), batch["video"], atol=1e-6
    )

    def zero_residual(x, logsnr, **kwargs):
        return np.zeros((*x.shape[:-1], 1), np.float32)

    sample = stage.sample(zero_residual, jax.random.key(0), cond)
    np.testing.assert_allclose(sample, upsampled, atol=1e-5)
    low, high = stage.x0_clip(cond)  # the video, not the residual, is kept in [-1, 1]
    np.testing.assert_allclose(low + upsampled, -1.0, atol=1e-6)
    np.testing.assert_allclose(high + upsampled, 1.0, atol=1e-6)


def test_class_conditional_sr_stage_samples_with_classifier_free_guidance():
    """Guidance runs the conditional and null-label halves in one [2B] batch; the upsampled
    clip and its augmentation level go to both halves (they were [B]: a shape error)."""
    overrides = {"model.num_classes": 10, "diffusion.label_dropout": 0.1}
    config = config_checks.validate(tiny_config("temporal_sr", "unused", **overrides))
    config.sample.guidance_scale = 2.0
    stage = build_stage(config)
    whole = stage.eval_batch(_clips(), np.random.default_rng(0))
    tx = make_optimizer(config.train)
    params = jax.eval_shape(lambda key: init_state(stage, tx, key), jax.random.key(0))["params"]
    graphdef = model_graphdef(stage)
    videos = jax.eval_shape(
        lambda p, c: stage.sample(merge_model(graphdef, p), jax.random.key(2), c),
        params,
        stage.cond_from_batch(whole),
    )
    assert videos.shape == (2, *stage.output_shape)
