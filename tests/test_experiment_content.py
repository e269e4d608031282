"""Experiments on either embedded data set: the stage configs follow the data set's clips
(channels, label classes), and generated videos are measured with its content metrics (the
digit reader for moving_digits, the exact physics metrics for bouncing_shapes)."""

import json
from pathlib import Path

import numpy as np
import pytest

from cascade import configs
from cascade.configs import ConfigError
from cascade.data.builders import bouncing_shapes as bs
from cascade.evaluation import physics_scoring
from experiments import cascade_vs_single_stage as comparison
from experiments import cascade_vs_single_stage_report as comparison_report
from experiments import common, content, expconfig, lab, summary

STAGES = ("keyframes", "temporal_sr", "spatial_sr", "video_vae", "latent_dit")


def test_stage_configs_follow_the_bouncing_shapes_clips(tmp_path):
    exp = expconfig.load(
        "experiments/cascade_vs_single_stage:tiny_shapes", [("data_dir", str(tmp_path))]
    )
    stage = comparison.stage_configs(exp, 0)
    assert {(c.data.name, c.view.channels) for c in stage.values()} == {("bouncing_shapes", 3)}
    key = stage["keyframes"].model
    assert (key.in_channels, key.out_channels, key.num_classes) == (3, 3, len(bs.SHAPES))
    for sr in ("temporal_sr", "spatial_sr"):  # the low-resolution clip is concatenated
        assert (stage[sr].model.in_channels, stage[sr].model.out_channels) == (6, 3)
    assert stage["video_vae"].model.in_channels == 3
    assert stage["latent_dit"].model.num_classes == len(bs.SHAPES)


@pytest.mark.parametrize("preset", common.PRESETS)
def test_matching_moving_digits_changes_no_preset(preset):
    # The digit presets already fit moving_digits: their trained workdirs keep their hashes.
    for name in STAGES:
        config = configs.load(f"{name}:{preset}")
        before = common.config_hash(config)
        assert common.config_hash(content.match_data(config)) == before, name


def test_bouncing_shapes_videos_are_measured_with_the_physics_metrics(tmp_path):
    exp = expconfig.load(
        "experiments/cascade_vs_single_stage:tiny_shapes",
        [("data_dir", str(tmp_path)), ("fvd", "false")],
    )
    clips = bs.render_chunk([np.random.default_rng(7 + i) for i in range(3)], 16, 32)
    videos = np.stack([c["video"] for c in clips]).astype(np.float32) / 127.5 - 1.0
    arrays = lab.Lab(exp).measure(videos, np.zeros(3, np.int32))
    assert set(content.PHYSICS_ARRAYS) <= set(arrays) and "label_match" not in arrays
    assert arrays["preview"].shape == (3, 16, 32, 32, 3)
    # Ground-truth clips: rasterisation-level ballistic fits and no violation.
    assert np.nanmax(arrays["ballistic_rmse"]) < 0.5
    assert arrays["permanence_violations"].sum() == 0 and arrays["teleports"].sum() == 0
    assert (arrays["num_objects"] >= 1).all() and not arrays["empty_scene"].any()
    # A scene without objects has nothing to violate: undefined, not a perfect 0, and counted.
    empty = lab.Lab(exp).measure(np.full_like(videos, -1.0), np.zeros(3, np.int32))
    assert empty["empty_scene"].all() and (empty["num_objects"] == 0).all()
    for key in physics_scoring.NEEDS_AN_OBJECT:
        assert np.isnan(empty[key]).all(), key
    setting = {"ablation": "pipeline", "setting": "real", "view": "final", "runs": [(arrays, {})]}
    row = summary.setting_row(setting, None, exp)
    assert row["videos"] == 3 and row["shape_constancy"]["mean"] == pytest.approx(1.0)
    verdict_metrics = [m for m, _ in content.of("bouncing_shapes").verdicts]
    assert "ballistic_rmse" in verdict_metrics and set(verdict_metrics) <= set(summary.METRICS)
    real = {"physics": {"ballistic_rmse": 0.12, "permanence_violations": 0.0, "num_objects": 1.8}}
    line = comparison_report.real_line({"real_reference": real})
    assert "ballistic RMSE 0.12" in line and "objects found 1.8 per clip" in line


def test_a_data_set_without_content_metrics_is_refused_with_its_key(tmp_path):
    exp = expconfig.load(
        "experiments/cascade_vs_single_stage:tiny", [("data.name", "moving_mnist")]
    )
    with pytest.raises(ConfigError, match="config.data.name='moving_mnist'"):
        comparison.check(exp)


def test_changing_what_is_measured_retires_earlier_runs(monkeypatch):
    """A data set whose per-clip measurements changed (Content.version) fingerprints its runs
    anew, so runs made before are measured again; version 1 leaves fingerprints unchanged."""
    import dataclasses

    exp = expconfig.load("experiments/cascade_vs_single_stage:cpu_shapes")
    now = lab.Lab(exp).fingerprint()
    shapes = dataclasses.replace(content.CONTENT["bouncing_shapes"], version=1)
    monkeypatch.setitem(content.CONTENT, "bouncing_shapes", shapes)
    assert lab.Lab(exp).fingerprint() != now
    digits = expconfig.load("experiments/cascade_vs_single_stage:cpu")
    assert content.of("moving_digits").version == 1  # its committed runs stay valid
    committed = Path("experiments/results/cascade_vs_single_stage/cpu/runs/seed0/done.json")
    assert lab.Lab(digits).fingerprint() == json.loads(committed.read_text())["fingerprint"]
