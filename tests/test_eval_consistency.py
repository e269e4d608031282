"""Numbers you can trust: one reader of the test split for sampling, runners and evaluation,
and the README's promises about presets kept."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from cascade import configs
from cascade.data import loading, pipeline
from cascade.data.views import clip_view
from cascade.evaluation import digits, evaluate
from cascade.sampling.runners import Runner
from cascade.stages import build_stage
from cascade.training import parallel
from cascade.training.sampler import Sampler

ROOT = Path(__file__).resolve().parent.parent


class FixedRunner(Runner):
    """A runner's label reader without trained stages: its final videos look like `config`."""

    def __init__(self, config):
        self.config = config

    @property
    def final_config(self):
        return self.config

    def sample(self, labels, key):  # labels are all this test reads
        raise NotImplementedError

    def params(self):
        return {"total": 0}


def test_sampling_runners_and_evaluation_read_the_same_test_clips(data_dir):
    config = tiny_config("keyframes", data_dir)
    n = config.data.num_test
    clips = pipeline.test_clips(config.data, n)
    stored = [int(ex["label"]) for ex in loading.load_dataset(config.data, "test").take(n)]
    np.testing.assert_array_equal(clips["label"], stored)  # stored order
    first = pipeline.test_clips(config.data, 3)  # any n, no batch: a prefix of the same clips
    np.testing.assert_array_equal(first["video"], clips["video"][:3])
    # Sample i is conditioned on the label of real clip i, which evaluation compares it with.
    sampler = Sampler(build_stage(config), None, parallel.make_mesh(config.mesh))
    np.testing.assert_array_equal(sampler.test_conditioning(config, n)["label"], clips["label"])
    np.testing.assert_array_equal(FixedRunner(config).labels(n), clips["label"])
    real = evaluate.real_videos(config, n)
    np.testing.assert_array_equal(
        real, clip_view(clips["video"], config.view, config.data, np.random.default_rng(0))
    )
    with pytest.raises(ValueError, match=f"has {n} clips but {n + 1} were asked for"):
        pipeline.test_clips(config.data, n + 1)


def test_real_clips_score_their_own_labels(data_dir):
    """The real reference of a runner's evaluation reads its digits as the labels the runner
    conditioned on. Clips whose two digits overlap in every frame have no readable track
    (label_match 0 there, for real and generated clips alike); every readable one matches."""
    config = tiny_config(
        "keyframes",
        data_dir,
        **{"data.resolution": 64, "data.num_test": 16, "view.resolution": 64},
        **{"view.frames": 8, "view.frame_stride": 1},
    )
    labels = FixedRunner(config).labels(16)
    real = evaluate.real_videos(config, 16)
    per_clip = digits.digit_metrics(real, labels)
    readable = per_clip["num_tracks"] > 0
    assert readable.sum() >= 10
    assert per_clip["label_match"][readable].mean() >= 0.95, per_clip
    # End to end: evaluate_outputs' real reference (8 frames: too short for FVD's I3D).
    result = evaluate.evaluate_outputs({"final": real}, config, labels)
    reference = result["real_reference"]["digits"]["label_match"]
    assert reference == pytest.approx(per_clip["label_match"].mean())
    assert reference >= 0.95 * readable.mean()
    # Another clip's labels (what the old shuffled readers gave) do not match.
    other = digits.digit_metrics(real, np.roll(labels, 1))["label_match"][readable].mean()
    assert other < 0.5


def test_readme_presets_exist():
    """Every `configs/<file>.py:<preset>` the README names exists, and its promise that every
    config file has `default` and `tiny` presets holds."""
    readme = (ROOT / "README.md").read_text()
    assert "every file has `default` and `tiny`" in readme
    named = set(re.findall(r"configs/(\w+)\.py:(\w+)", readme))
    assert named, "the README names no preset"
    files = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if p.stem != "__init__")
    wanted = named | {(f, "default") for f in files} | {(f, "tiny") for f in files}
    for name, preset in sorted(wanted):
        assert configs.load(f"{name}:{preset}") is not None, (name, preset)
