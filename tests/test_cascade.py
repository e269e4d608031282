"""SR stages and the cascade runner on tiny trained stages: shapes, files, chain validation."""

import functools
import json

import jax
import numpy as np
import pytest
from conftest import tiny_config

from cascade.configs import ConfigError, load
from cascade.evaluation.evaluate import evaluate_runner, evaluate_super_resolution
from cascade.sampling.runners import CascadeRunner
from cascade.stages.super_resolution import spatial_upsample, temporal_upsample
from cascade.training.concurrent import StoppableTrainer, run_concurrently
from cascade.training.trained import load_trained
from cascade.training.trainer import Trainer

OVERRIDES = {
    "keyframes": {},
    "temporal_sr": {"sr.noise_aug": True},
    "spatial_sr": {"sr.noise_aug": False, "model.use_aug_cond": False},
}


def stage_config(name, data_dir):
    return tiny_config(name, data_dir, **{"train.num_samples": 0, **OVERRIDES[name]})


@pytest.fixture(scope="module")
def trained_workdirs(data_dir, tmp_path_factory):
    """Tiny keyframe, TSR (noise augmentation on) and SSR (off) trained for a few steps, side
    by side in threads as the quickstart trains them."""
    root = tmp_path_factory.mktemp("stages")

    def train(name, stop):
        StoppableTrainer(stage_config(name, data_dir), root / name, stop).train()

    run_concurrently({name: functools.partial(train, name) for name in OVERRIDES})
    return root


def test_a_stage_trained_beside_others_equals_one_trained_alone(
    trained_workdirs, data_dir, tmp_path
):
    alone = Trainer(stage_config("temporal_sr", data_dir), tmp_path).train()
    beside = load_trained(trained_workdirs / "temporal_sr", ema=False)
    assert int(alone["step"]) == beside.step
    for a, b in zip(jax.tree.leaves(alone["params"]), jax.tree.leaves(beside.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def cascade_config(root, order=("keyframes", "temporal_sr", "spatial_sr")):
    config = load("cascade")
    config.order = order
    for name in ("keyframes", "temporal_sr", "spatial_sr"):
        config.stages[name].update(workdir=str(root / name), steps=4)
    config.update(num_samples=3, batch_size=2)
    return config


def test_cascade_runs_and_writes_every_stage(trained_workdirs, tmp_path):
    runner = CascadeRunner(cascade_config(trained_workdirs))
    report = runner.write(tmp_path)
    # keyframes (4 frames, 8x8) -> TSR x2 (8 frames) -> SSR x2 (16x16)
    assert report["shapes"] == {
        "keyframes": [4, 8, 8, 1],
        "temporal_sr": [8, 8, 8, 1],
        "spatial_sr": [8, 16, 16, 1],
    }
    assert report["num_videos"] == 3
    for name in ("keyframes", "temporal_sr", "spatial_sr", "final", "stages"):
        for suffix in (".gif", ".mp4", "_grid.png"):
            assert (tmp_path / f"{name}{suffix}").stat().st_size > 0
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert set(timing["seconds"]) == {"keyframes", "temporal_sr", "spatial_sr"}
    outputs, _ = runner.sample_many(2)
    final = outputs["spatial_sr"]
    assert final.shape == (2, 8, 16, 16, 1) and np.all(np.isfinite(final))

    # --mode=evaluate: sampling FLOPs per video of every stage and their sum (README).
    result = evaluate_runner(runner, runner.config, tmp_path / "eval", num=2)
    cost = result["sampling_cost"]
    by_stage = cost["flops_per_video_by_stage"]
    assert list(by_stage) == ["keyframes", "temporal_sr", "spatial_sr"]
    assert all(v > 0 for v in by_stage.values())
    assert cost["flops_per_video"] == pytest.approx(sum(by_stage.values()))
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["sampling_cost"]["flops_per_video"] == pytest.approx(cost["flops_per_video"])


def test_mismatched_chain_is_rejected_before_sampling(trained_workdirs):
    config = cascade_config(trained_workdirs, order=("keyframes", "spatial_sr"))
    with pytest.raises(ConfigError, match=r"\(4, 8, 8, 1\).*expects \(8, 8, 8, 1\)"):
        CascadeRunner(config)
    config = cascade_config(trained_workdirs, order=("temporal_sr", "spatial_sr"))
    with pytest.raises(ConfigError, match="must generate from noise"):
        CascadeRunner(config)


def test_missing_stage_checkpoint_is_a_clear_error(tmp_path):
    config = cascade_config(tmp_path)
    with pytest.raises(Exception, match="No checkpoint found.*Train this stage first"):
        CascadeRunner(config)


def test_conditioning_upsamplers_place_frames_on_the_target_grid():
    low = np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1, 1) * np.ones(
        (1, 3, 2, 2, 1), np.float32
    )
    rep = np.asarray(temporal_upsample(low, 2, "repeat"))[0, :, 0, 0, 0]
    lin = np.asarray(temporal_upsample(low, 2, "linear"))[0, :, 0, 0, 0]
    np.testing.assert_allclose(rep, [0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(lin, [0, 0.5, 1, 1.5, 2, 2])  # input frame i sits at 2i
    flat = np.full((1, 2, 4, 4, 3), 0.25, np.float32)
    np.testing.assert_allclose(np.asarray(spatial_upsample(flat, 2)), 0.25, rtol=1e-6)
    assert spatial_upsample(flat, 2).shape == (1, 2, 8, 8, 3)


def test_super_resolution_scores_read_content_beside_pixels(trained_workdirs):
    """PSNR can hide what a viewer sees (in-between digits read as other digits), so each SR
    stage's score also reads the digits of its output, of each baseline and of the target."""
    scores = evaluate_super_resolution(load_trained(trained_workdirs / "temporal_sr"), 2)
    content = scores["content"]
    assert set(content["baselines"]) == set(scores["baselines"])
    for measured in (content["model"], content["target"], *content["baselines"].values()):
        assert {"identity_stability", "label_match"} <= set(measured["digits"])
