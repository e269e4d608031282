"""`--condition=frames` from the command line: a tiny keyframe stage (2 training steps) continues
real test clips, writes the marked videos and PSNR per frame offset; bad requests are refused
before anything is loaded (more cases in tests/bad_inputs.py)."""

import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from conftest import tiny_config
from flax import nnx

from cascade import main as cascade_main
from cascade.configs import ConfigError
from cascade.evaluation import continuation, continuation_cascade
from cascade.sampling import runners
from cascade.stages import build_stage
from cascade.stages.stage import model_graphdef
from cascade.training import parallel
from cascade.training.sampler import Sampler
from cascade.training.trained import TrainedStage
from cascade.training.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent
STEPS = 2  # sampler steps: enough to run the loop


@pytest.fixture(scope="module")
def trained_workdir(data_dir, tmp_path_factory):
    """A tiny keyframes stage (4 frames at 8x8, stride 2 over 8-frame clips) trained 2 steps."""
    workdir = tmp_path_factory.mktemp("keyframes")
    config = tiny_config(
        "keyframes",
        data_dir,
        **{"train.steps": 2, "train.checkpoint_every": 2, "train.num_samples": 0},
    )
    Trainer(config, str(workdir)).train()
    return workdir


def test_extension_through_main_writes_marked_videos_and_offset_metrics(
    trained_workdir, data_dir, capsys
):
    """4-frame window, 2 given, target 6: two windows; the clips hold 4 true frames at stride
    2, so frames 2 and 3 (offsets 1, 2) are scored and frames 4, 5 have no truth."""
    code = cascade_main.main(
        [
            "cascade.main",
            f"--config={REPO / 'configs' / 'keyframes.py'}:tiny",
            f"--workdir={trained_workdir}",
            "--mode=sample",
            "--condition=frames",
            "--given_frames=2",
            "--target_frames=6",
            "--num_samples=2",
            f"--config.sample.steps={STEPS}",
            f"--config.data.data_dir={data_dir}",
        ]
    )
    assert code == 0, capsys.readouterr().err
    samples = trained_workdir / "samples"
    for name in ("keyframes_continuation", "keyframes_continuation_real"):
        for suffix in (".gif", ".mp4", "_grid.png"):
            assert (samples / f"{name}{suffix}").stat().st_size > 0, name + suffix
    assert (samples / "keyframes_continuation_vs_real.gif").exists()
    report = json.loads((samples / "keyframes_continuation_metrics.json").read_text())
    assert report["method"] == "reconstruction" and report["w_r"] == 2.0
    assert (report["given_frames"], report["target_frames"], report["windows"]) == (2, 6, 2)
    assert report["true_frames"] == 4 and report["sample_steps"] == STEPS
    assert [(r["frame"], r["offset"]) for r in report["frames"]] == [(2, 1), (3, 2)]
    assert all(np.isfinite(r["psnr"]) for r in report["frames"])
    # 8x8 frames are smaller than SSIM's 11x11 window: null with the reason, not a number.
    assert report["ssim_mean"] is None and "11x11" in report["ssim_reason"]
    assert "Continued 2 test clips from 2 to 6 frames" in capsys.readouterr().out


def test_given_frames_are_kept_exactly_by_replacement(trained_workdir, data_dir):
    """run() with a checked request: the continuation starts with the true given frames, has
    the target length, and the real clips are the stage's view of the same test clips."""
    config = tiny_config("keyframes", data_dir, **{"sample.steps": STEPS})
    request = continuation.check_request(
        config, mode="sample", method="replacement", given_frames=3
    )
    assert (request.target_frames, request.overlap, request.windows, request.w_r) == (4, 3, 1, 0)
    result = cascade_main.run(config, str(trained_workdir), "sample", 2, request)
    assert result.video.shape == (2, 4, 8, 8, 1) and result.real.shape == (2, 4, 8, 8, 1)
    np.testing.assert_array_equal(result.video[:, :3], result.real[:, :3])
    assert np.abs(result.video).max() <= 1.0 + 1e-6
    assert [r["frame"] for r in result.report["frames"]] == [3]
    # The grid PNG has the marked (bordered) frames: 1-pixel border around 8x8, upscaled x6.
    grid = trained_workdir / "samples" / "keyframes_continuation_grid.png"
    assert grid.exists()


def test_offset_metrics_per_frame_and_ssim_on_large_frames():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, size=(2, 5, 12, 12, 1)).astype(np.float32)
    generated = real.copy()
    generated[:, 3] += 0.1  # frame 3 off by 0.05 in [0, 1]: PSNR about 26 dB
    out = continuation.offset_metrics(generated, real, given=2)
    rows = out["frames"]
    assert [r["frame"] for r in rows] == [2, 3, 4] and [r["offset"] for r in rows] == [1, 2, 3]
    assert rows[0]["psnr"] is None and rows[0]["ssim"] == pytest.approx(1.0)  # identical: inf
    assert 20 < rows[1]["psnr"] < 30 and rows[1]["ssim"] < 1.0
    assert "ssim_reason" not in out
    short = continuation.offset_metrics(generated, real[:, :2], given=2)
    assert short["frames"] == [] and "no true frame" in short["reason"]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"given_frames": 4}, "1 <= given_frames < 4"),
        ({"given_frames": 2, "target_frames": 5}, "--target_frames=5 cannot be reached"),
        ({"given_frames": 2, "overlap": 4}, "--overlap=4"),
        ({"w_r": -1.0}, "must be >= 0"),
        ({"method": "replacement", "w_r": 3.0}, "would be ignored"),
    ],
)
def test_bad_requests_name_the_flag(kwargs, words, data_dir):
    config = tiny_config("keyframes", data_dir)
    with pytest.raises(ConfigError, match=words.replace("+", r"\+")):
        continuation.check_request(config, mode="sample", **kwargs)


def random_trained(config, workdir):
    """A stage with random weights as `load_trained` gives it (no training: shapes and
    plumbing are what these tests check)."""
    stage = build_stage(config)
    graphdef = model_graphdef(stage)
    rng = np.random.default_rng(0)
    params = nnx.state(stage.build_model(nnx.Rngs(0)))
    params = jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape, np.float32), params)
    mesh = parallel.make_mesh(config.mesh)
    return TrainedStage(config, stage, graphdef, params, 0, workdir, Sampler(stage, graphdef, mesh))


def test_cascade_extends_keyframes_then_super_resolves_window_by_window(data_dir, tmp_path):
    """Keyframes (4 frames at 8x8) extended 2 -> 8 frames from a .npy conditioning video, then
    temporal SR (4 -> 8 frames) and spatial SR (8x8 -> 16x16) each run over the long clip in
    windows of their trained input shape: final [2, 16, 16, 16, 1], written marked, with the
    quality metrics --mode=evaluate adds."""
    names = ("keyframes", "temporal_sr", "spatial_sr")
    stages = [
        (n, random_trained(tiny_config(n, data_dir, **{"sample.steps": STEPS}), tmp_path))
        for n in names
    ]
    runners.validate_chain([(n, t.stage) for n, t in stages])
    runner = object.__new__(runners.CascadeRunner)  # the stages without checkpoints
    runner.config, runner.stages = ml_collections.ConfigDict({"seed": 0}), stages
    calls = []
    for _, trained in stages[1:]:
        sample = trained.sample
        trained.sample = lambda cond, key, sample=sample: (
            calls.append(cond["cond"].shape),
            sample(cond, key),
        )[1]
    video_file = tmp_path / "given.npy"
    given = np.random.default_rng(1).integers(0, 256, (2, 3, 8, 8, 1), dtype=np.uint8)
    np.save(video_file, given)
    request = continuation.check_request(
        stages[0][1].config, mode="sample", method="replacement", given_frames=2, target_frames=8
    )
    result = continuation_cascade.write_runner_continuations(
        runner, tmp_path / "out", request, 2, video_path=str(video_file), quality=True
    )
    assert result.video.shape == (2, 8, 8, 8, 1) and result.real.shape == (2, 3, 8, 8, 1)
    np.testing.assert_allclose(result.video[:, :2], given[:, :2] / 127.5 - 1.0, atol=1e-6)
    assert calls == [(2, 4, 8, 8, 1)] * 2 + [(2, 8, 8, 8, 1)] * 2  # every window: trained shape
    assert result.report["final_shape"] == [16, 16, 16, 1]
    assert result.report["keyframes"]["frames"][0]["frame"] == 2  # frame 2 is in the file
    quality = result.report["quality"]  # --mode=evaluate: of the extended keyframes
    assert "content" in quality and "shorter than" in quality["fvd_windows"]["reason"]
    for name in ("cascade_continuation.gif", "keyframes_continuation_vs_real.gif"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert json.loads((tmp_path / "out" / "cascade_continuation_metrics.json").read_text())
    with pytest.raises(ConfigError, match="does not cut into windows of the temporal_sr"):
        runners.sample_windows(stages[1][1], result.video[:, :6], np.zeros(2, np.int32), None)


def test_only_keyframe_stages_are_conditioned(data_dir):
    for name in ("latent_dit", "temporal_sr"):
        config = tiny_config(name, data_dir)
        with pytest.raises(ConfigError, match="needs a keyframe stage"):
            continuation.check_request(config, mode="sample")
