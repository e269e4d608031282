"""The single-stage path through the trainer: tiny VAE -> latent DiT -> runner, distillation of
the flow DiT, and the errors a misconfigured latent DiT gives."""

import json

import jax
import numpy as np
import pytest
from conftest import tiny_config

from cascade.configs import ConfigError, load
from cascade.data import loading
from cascade.sampling.runners import SingleStageRunner
from cascade.stages import build_stage
from cascade.training.checkpoints import Checkpointer, CheckpointError
from cascade.training.distillation import DistillationTrainer
from cascade.training.trained import build_stage_from_config, load_trained
from cascade.training.trainer import Trainer


@pytest.fixture(scope="module")
def vae_workdir(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vae")
    Trainer(tiny_config("video_vae", data_dir), workdir).train()
    return workdir


def dit_config(data_dir, vae_workdir, **overrides):
    return tiny_config("latent_dit", data_dir, **{"vae.workdir": str(vae_workdir), **overrides})


@pytest.fixture(scope="module")
def dit_workdir(data_dir, vae_workdir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dit")
    Trainer(dit_config(data_dir, vae_workdir), workdir).train()
    return workdir


def test_latent_dit_trains_samples_and_distils(data_dir, vae_workdir, dit_workdir, tmp_path):
    config = dit_config(data_dir, vae_workdir)
    stage = build_stage_from_config(config)
    # 5 frames of 16x16 -> 2 latent frames of 4x4 (4x spatial in the tiny VAE), 4 channels.
    assert stage.output_shape == (2, 4, 4, 4)
    assert np.isfinite(stage.vae.latent_scale) and stage.vae.latent_scale > 0
    # Cached latents: each clip is encoded once; the same clips give the same posterior means.
    cached = build_stage_from_config(dit_config(data_dir, vae_workdir, **{"vae.latents": "cached"}))
    clips = {
        "video": np.random.default_rng(0).uniform(-1, 1, (2, 8, 16, 16, 1)).astype(np.float32),
        "label": np.zeros(2, np.int64),
    }
    first = cached.make_batch(clips, np.random.default_rng(1))["video"]
    assert len(cached.vae._moment_cache) == 2
    again = cached.make_batch(clips, np.random.default_rng(2))["video"]
    assert len(cached.vae._moment_cache) == 2 and first.shape == again.shape == (2, 2, 4, 4, 4)
    np.testing.assert_allclose(
        cached.vae.encode(clips["video"][:, :5]),
        stage.vae.encode(clips["video"][:, :5]),
        rtol=1e-5,
        atol=1e-5,
    )
    assert (dit_workdir / "samples" / "step_0000004.gif").exists()

    runner_config = load("single_stage")
    runner_config.dit.update(workdir=str(dit_workdir), steps=3)
    runner_config.update(num_samples=2, batch_size=2)
    runner = SingleStageRunner(runner_config)
    report = runner.write(tmp_path / "out")
    assert report["shapes"]["video_vae"] == [5, 16, 16, 1]
    assert set(report["seconds"]) == {"latent_dit", "vae_decode"}
    assert (tmp_path / "out" / "final.gif").exists() and (tmp_path / "out" / "stages.mp4").exists()
    assert runner.params()["video_vae"] > 0 and runner.params()["latent_dit"] > 0

    distill = load("distill:tiny")
    distill.distill.update(
        teacher_workdir=str(dit_workdir),
        start_steps=4,
        end_steps=1,
        steps_per_round=1,
        compare_videos=2,
    )
    trainer = DistillationTrainer(distill, tmp_path / "student")
    trainer.train()
    report = trainer.compare()
    assert np.isfinite(report["student_rmse_to_teacher_many_steps"])
    student = load_trained(tmp_path / "student")
    assert student.config.sample.sampler == "euler" and student.config.sample.steps == 1
    saved = json.loads((tmp_path / "student" / "distill_report.json").read_text())
    assert saved["end_steps"] == 1


def test_trained_latent_dit_samples_without_the_training_set(
    data_dir, vae_workdir, dit_workdir, monkeypatch
):
    """The latent scale measured at training time is in the checkpoint; loading and sampling
    (config from the checkpoint, or given as on the command line) never read the train split."""
    meta = Checkpointer(dit_workdir).restore_meta()
    assert meta["config"]["vae"]["latent_scale"] == 0.0  # "measure it", as configured
    measured = meta["measured"]["vae.latent_scale"]
    open_source = loading.open_source

    def test_split_only(data_cfg, split):
        if split == "train":
            raise AssertionError("sampling read the training split")
        return open_source(data_cfg, split)

    monkeypatch.setattr(loading, "open_source", test_split_only)
    for config in (None, dit_config(data_dir, vae_workdir)):
        dit = load_trained(dit_workdir, config)
        assert dit.stage.vae.latent_scale == pytest.approx(measured, rel=1e-6)
    cond = dit.sampler.test_conditioning(dit.config, 2)
    videos = dit.stage.to_video(dit.sample(cond, jax.random.key(0), steps=2))
    assert videos.shape == (2, 5, 16, 16, 1) and np.isfinite(videos).all()
    monkeypatch.undo()  # the stored scale is the one training measured on the train clips
    assert dit.stage.vae.measure_latent_scale(dit.config) == pytest.approx(measured, rel=1e-6)


def test_vae_stage_reconstructs_and_rejects_bad_frame_counts(data_dir, vae_workdir):
    vae = load_trained(vae_workdir)
    cond = vae.sampler.test_conditioning(vae.config, 2)
    recon = vae.sample(cond, __import__("jax").random.key(0))
    assert recon.shape == cond["cond"].shape and np.all(np.abs(recon) <= 1.0)
    with pytest.raises(ConfigError, match="1 \\+ 4k"):
        build_stage(tiny_config("video_vae", data_dir, **{"view.frames": 6}))


def test_latent_dit_bad_inputs(data_dir, vae_workdir, tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint found"):
        build_stage_from_config(dit_config(data_dir, tmp_path / "no_vae"))
    with pytest.raises(ConfigError, match=r"in_channels=8.*\(2, 4, 4, 4\)"):
        build_stage_from_config(dit_config(data_dir, vae_workdir, **{"model.in_channels": 8}))
    with pytest.raises(ConfigError, match="1 \\+ 4k"):
        build_stage_from_config(dit_config(data_dir, vae_workdir, **{"view.frames": 4}))
    with pytest.raises(ConfigError, match="does not tile"):
        build_stage_from_config(
            dit_config(data_dir, vae_workdir, **{"model.patch_size": (1, 3, 3)})
        )


@pytest.mark.slow
def test_causal_dit_trains_and_samples_long_videos(data_dir, vae_workdir, tmp_path):
    """configs/causal_dit.py:tiny through the trainer, then `--mode=sample` (cascade.main.run):
    3 x the trained 2 latent frames by KV-cache rollout, decoded chunk by chunk."""
    from cascade.main import run
    from cascade.sampling.rollout import ChunkRollout

    config = tiny_config("causal_dit", data_dir, **{"vae.workdir": str(vae_workdir)})
    Trainer(config, tmp_path).train()
    dit = load_trained(tmp_path)
    assert dit.stage.name == "causal_dit" and dit.config.causal.length == 3
    path = run(dit.config, str(tmp_path), "sample", num_samples=2)
    assert path.name == "causal_dit_long.gif" and path.exists()
    cond = dit.sampler.test_conditioning(dit.config, 2)
    key = jax.random.key(0)
    rollout = ChunkRollout(dit)
    long = rollout.latents(cond, key, chunks=6)
    assert long.shape == (2, 6, 4, 4, 4) and rollout.step._cache_size() == 1
    # the first chunks of the host loop are the stage's scanned trained-length sample
    np.testing.assert_allclose(long[:, :2], dit.sample(cond, key), atol=1e-4)


@pytest.mark.slow
def test_tiny_vae_reconstructs_held_out_clips_above_stated_psnr(data_dir, tmp_path):
    """200 steps of the tiny VAE: held-out PSNR >= 18 dB and >= 3 dB above the all-background
    prediction (which already scores ~14.8 dB on mostly-black digit clips; measured 19.5)."""
    from cascade.evaluation.evaluate import reconstruction_metrics

    config = tiny_config(
        "video_vae",
        data_dir,
        **{"train.steps": 200, "train.num_samples": 0, "train.checkpoint_every": 200},
    )
    Trainer(config, tmp_path).train()
    vae = load_trained(tmp_path)
    cond = vae.sampler.test_conditioning(vae.config, 8)
    scores = reconstruction_metrics(vae.sample(cond, __import__("jax").random.key(0)), cond["cond"])
    print("tiny VAE held-out reconstruction:", scores)
    assert scores["psnr"] >= 18.0, scores
    assert scores["psnr"] >= scores["background_baseline"]["psnr"] + 3.0, scores
