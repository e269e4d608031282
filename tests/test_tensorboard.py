"""TensorBoard, the viewer the README names: installed in the project's environment, and the
event files `cascade.training.metrics_log` writes load with TensorBoard's own reader, showing
losses, learning rate, sample grids and animated videos, the config and evaluation metrics.

The trainer's event files are checked on a workdir the notebook test trains anyway
(tests/test_notebook_cascade.py calls `check_training_logs`), not on a run of their own."""

import math
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cascade.training.metrics_log import MetricsLog, log_evaluation

GIF_MAGIC, PNG_MAGIC = b"GIF89a", b"\x89PNG"


def load_events(logdir: str | Path) -> EventAccumulator:
    """Every event under logdir (no sampling: size_guidance 0 keeps all)."""
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def check_training_logs(workdir: str | Path, *, samples: bool) -> EventAccumulator:
    """What a Trainer run writes to workdir/logs: training scalars (loss, learning rate), the
    config as text and, when it wrote samples, the sample grid (PNG) and video (GIF)."""
    events = load_events(Path(workdir) / "logs")
    tags = events.Tags()
    assert {"loss", "learning_rate", "grad_norm", "steps_per_s"} <= set(tags["scalars"]), tags
    assert all(math.isfinite(e.value) for e in events.Scalars("loss"))
    assert all(e.value > 0 for e in events.Scalars("learning_rate"))
    assert "config/text_summary" in tags["tensors"], tags
    if samples:
        assert {"samples", "samples_video"} <= set(tags["images"]), tags
        assert events.Images("samples")[-1].encoded_image_string.startswith(PNG_MAGIC)
        assert events.Images("samples_video")[-1].encoded_image_string.startswith(GIF_MAGIC)
    return events


def test_metrics_log_events_load_in_tensorboard(tmp_path):
    log = MetricsLog(tmp_path)
    for step in (1, 2):
        log.scalars({"loss": 1.0 / step, "learning_rate": 1e-3 * step}, step)
    videos = np.linspace(-1, 1, 2 * 3 * 4 * 5 * 1, dtype=np.float32).reshape(2, 3, 4, 5, 1)
    log.video_grid("samples", videos, 2)
    log.video("samples_video", videos, 2, scale=2)
    log.text("config", "seed: 0", 0)
    logged = log.evaluation(
        {"fvd": {"fvd": float("nan"), "kvd": 1.5}, "digits": {"label_match": 0.25}, "name": "x"},
        2,
    )
    log.close()
    # NaN (an undefined FVD) and strings are not plotted.
    assert logged == {"eval/fvd/kvd": 1.5, "eval/digits/label_match": 0.25}
    log_evaluation(
        tmp_path / "eval",
        {"psnr": np.float32(20.5), "config": {"seed": 3}},
        7,
        videos={"keyframes": videos[:, :2], "final": videos},
    )

    events = load_events(tmp_path / "logs")
    tags = events.Tags()
    assert {"loss", "learning_rate", "eval/fvd/kvd", "eval/digits/label_match"} == set(
        tags["scalars"]
    )
    assert [(e.step, e.value) for e in events.Scalars("learning_rate")] == [
        (1, np.float32(1e-3)),
        (2, np.float32(2e-3)),
    ]
    grid = events.Images("samples")[0]  # rows = videos, columns = frames
    assert grid.encoded_image_string.startswith(PNG_MAGIC)
    assert (grid.height, grid.width) == (2 * 4, 3 * 5)
    video = events.Images("samples_video")[0]  # the two videos side by side, 1 px padding, x2
    assert video.encoded_image_string.startswith(GIF_MAGIC)
    assert (video.height, video.width) == (2 * (4 + 2), 2 * (2 * 5 + 3))
    assert "config/text_summary" in tags["tensors"]

    evaluation = load_events(tmp_path / "eval" / "logs")
    assert evaluation.Tags()["scalars"] == ["eval/psnr"]  # config entries are settings
    assert evaluation.Scalars("eval/psnr")[0].step == 7
    # A cascade's videos per stage (the quickstart logs its outputs this way).
    images = evaluation.Tags()["images"]
    assert set(images) == {
        f"{kind}/{name}" for kind in ("samples", "samples_video") for name in ("keyframes", "final")
    }
    assert evaluation.Images("samples/keyframes")[0].width == 2 * 5  # its 2 frames
    assert evaluation.Images("samples_video/final")[0].encoded_image_string.startswith(GIF_MAGIC)


def test_tensorboard_command_is_installed():
    """`tensorboard --logdir results/quickstart` (README) finds the command in the project's
    environment (installed by pip install -e '.[test]', pinned)."""
    tensorboard = Path(sys.executable).with_name("tensorboard")
    assert tensorboard.exists(), f"{tensorboard} missing: pip install -e '.[test]'"
    (script,) = entry_points(group="console_scripts", name="tensorboard")
    assert script.value == "tensorboard.main:run_main"
