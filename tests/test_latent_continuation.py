"""`--condition=frames` for the latent DiT through `cascade.main`: a latent_dit stage and the
single-stage runner continue clips (test split / a .npy video) to the requested length, keep the
given frames up to the VAE's round trip, and write marked videos and per-offset metrics.

The tiny VAE and DiT checkpoints hold their initial weights (saved, never trained: what is
checked is frame counting, plumbing and the kept given frames, none of which needs a trained
model; the DiT's zero-initialised output layer makes generated latents the initial noise)."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from cascade import main as cascade_main
from cascade.configs import ConfigError, load
from cascade.evaluation import continuation_latent
from cascade.sampling import conditional
from cascade.training.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workdirs(data_dir, tmp_path_factory):
    """A tiny latent DiT (5 frames of 16x16 -> 2 latent frames of 4x4x4) on a tiny causal VAE
    (temporal factor 4), both checkpointed at step 0."""
    vae, dit = tmp_path_factory.mktemp("vae"), tmp_path_factory.mktemp("dit")
    for config, workdir in (
        (tiny_config("video_vae", data_dir), vae),
        (tiny_config("latent_dit", data_dir, **{"vae.workdir": str(vae)}), dit),
    ):
        trainer = Trainer(config, workdir)
        trainer.save(trainer.fresh_state(), 0)
        trainer.checkpointer.close()
    return {"vae": vae, "dit": dit}


@pytest.fixture
def extend_spy(monkeypatch):
    """Every `conditional.extend_video` call: (trained DiT, given video, decoded result)."""
    calls = []
    extend_video = conditional.extend_video

    def spy(trained, first_video, *args, **kwargs):
        video, latents = extend_video(trained, first_video, *args, **kwargs)
        calls.append((trained, np.asarray(first_video), video))
        return video, latents

    monkeypatch.setattr(conditional, "extend_video", spy)
    return calls


def assert_given_frames_kept(call, given: int, target: int) -> None:
    """The output has `target` frames and its first `given` are the VAE's round trip of the
    given frames (replacement keeps the given latents exactly; the decoder is causal)."""
    trained, first, video = call
    assert video.shape[1] == target and first.shape[1] == given
    stage = trained.stage
    round_trip = stage.to_video(stage.frames_to_outputs(first))
    np.testing.assert_allclose(video[:, :given], round_trip, atol=1e-4)


@pytest.mark.slow
def test_latent_dit_and_single_stage_extend_through_main(
    workdirs, data_dir, tmp_path, extend_spy, capsys
):
    """The stage (test split, --mode=sample): 1 given frame -> 9 frames, 2 windows of 2 latent
    frames; the runner (a 3-frame .npy clip, --mode=evaluate): defaults, 1 -> 5 frames."""
    dit_workdir = workdirs["dit"]
    code = cascade_main.main(
        [
            "cascade.main",
            f"--config={REPO / 'configs' / 'latent_dit.py'}:tiny",
            f"--workdir={dit_workdir}",
            "--mode=sample",
            "--condition=frames",
            "--given_frames=1",
            "--target_frames=9",
            "--num_samples=2",
            "--config.sample.steps=2",
            f"--config.vae.workdir={workdirs['vae']}",
            f"--config.data.data_dir={data_dir}",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert len(extend_spy) == 1
    assert_given_frames_kept(extend_spy[0], given=1, target=9)
    samples = dit_workdir / "samples"
    for name in ("latent_dit_continuation", "latent_dit_continuation_real"):
        for suffix in (".gif", ".mp4", "_grid.png"):
            assert (samples / f"{name}{suffix}").stat().st_size > 0, name + suffix
    assert (samples / "latent_dit_continuation_vs_real.gif").stat().st_size > 0
    report = json.loads((samples / "latent_dit_continuation_metrics.json").read_text())
    assert (report["given_frames"], report["target_frames"], report["windows"]) == (1, 9, 2)
    assert report["method"] == "replacement" and report["window"] == 5
    assert report["latent"] == {
        "temporal_factor": 4,
        "window": 2,
        "given_frames": 1,
        "target_frames": 3,
        "overlap": 1,
    }
    # the tiny clips hold 8 frames: generated frames 1..7 have a true frame, frame 8 none
    assert report["true_frames"] == 8
    assert [r["offset"] for r in report["frames"]] == list(range(1, 8))
    assert all(np.isfinite(r["psnr"]) and np.isfinite(r["ssim"]) for r in report["frames"])
    assert np.isfinite(report["given_frames_psnr"]) and "quality" not in report
    assert "Continued 2 test clips from 1 to 9 frames (replacement" in capsys.readouterr().out

    video_file = tmp_path / "given.npy"
    given = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16, 1), dtype=np.uint8)
    np.save(video_file, given)
    out = tmp_path / "runner"
    code = cascade_main.main(
        [
            "cascade.main",
            f"--config={REPO / 'configs' / 'single_stage.py'}:tiny",
            f"--workdir={out}",
            "--mode=evaluate",
            "--condition=frames",
            f"--condition_video={video_file}",
            f"--config.dit.workdir={dit_workdir}",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert len(extend_spy) == 2
    assert_given_frames_kept(extend_spy[1], given=1, target=5)
    np.testing.assert_allclose(extend_spy[1][1], given[:, :1] / 127.5 - 1.0, atol=1e-6)
    assert (out / "single_stage_continuation.gif").stat().st_size > 0
    report = json.loads((out / "single_stage_continuation_metrics.json").read_text())
    assert report["runner"] == "single_stage" and report["source"] == str(video_file)
    assert (report["given_frames"], report["target_frames"], report["windows"]) == (1, 5, 1)
    assert report["sample_steps"] == 4  # the runner's tiny steps, not the DiT's trained ones
    assert [r["frame"] for r in report["frames"]] == [1, 2]  # the file holds 3 frames
    assert report["quality"]["content"] and report["quality"]["fvd_windows"]["fvd"] is None

    # counts the loaded VAE refuses, naming the valid ones
    stage = extend_spy[0][0].stage
    for flags, words in (
        ({"given_frames": 4}, r"--given_frames=4: .* 1 \+ 4k .* one of 1, 5, 9, 13"),
        ({"given_frames": 1, "target_frames": 7}, r"--target_frames=7: .* 1, 5, 9"),
        ({"given_frames": 1, "target_frames": 1}, "nothing to generate"),
        ({"given_frames": 5}, r"window is 5 video frames \(2 latent frames\)"),
    ):
        request = continuation_latent.LatentRequest(**flags)
        with pytest.raises(ConfigError, match=words):
            request.resolve(stage, 8)


@pytest.mark.parametrize(
    "stage, kwargs, words",
    [
        ("latent_dit", {"method": "reconstruction"}, "--method=replacement .* is the method"),
        ("single_stage", {"w_r": 2.0}, "would be ignored"),
        ("latent_dit", {"given_frames": 5}, r"given_frames < 5"),
        ("single_stage", {"given_frames": 1, "overlap": 5}, "--overlap=5 is more than"),
        ("single_stage", {"mode": "train"}, "--mode=sample or --mode=evaluate"),
    ],
)
def test_latent_requests_refused_before_loading(stage, kwargs, words, data_dir):
    config = tiny_config(stage, data_dir) if stage == "latent_dit" else load("single_stage:tiny")
    with pytest.raises(ConfigError, match=words):
        continuation_latent.check_latent_request(config, **{"mode": "sample", **kwargs})
