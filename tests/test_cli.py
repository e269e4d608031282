"""The entry point: train -> sample -> evaluate through cascade.main, and its error messages."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST_COMPILE_XLA_FLAGS, tiny_config

from cascade.main import run

REPO = Path(__file__).resolve().parent.parent


def cli(*args, data_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["XLA_FLAGS"] = FAST_COMPILE_XLA_FLAGS  # one device, as a user has
    cmd = [sys.executable, "-m", "cascade.main", *args, f"--config.data.data_dir={data_dir}"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_sample_evaluate_through_main(data_dir, tmp_path):
    config = tiny_config("keyframes", data_dir, **{"train.steps": 2, "train.num_samples": 2})
    run(config, str(tmp_path), "train")
    path = run(config, str(tmp_path), "sample", num_samples=2)
    assert path.exists() and path.with_suffix(".mp4").exists()
    result = run(config, str(tmp_path), "evaluate", num_samples=2)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["stage"] == "keyframes" and saved["num_videos"] == 2
    # 4-frame clips are too short for the Kinetics I3D: FVD says why instead of inventing a number.
    assert saved["fvd"]["fvd"] is None and "9 frames" in saved["fvd"]["reason"]
    assert "digits" in saved and saved["sampling_cost"]["flops_per_video"] > 0
    assert result["params"] > 0


def test_cli_errors_are_clear(data_dir, tmp_path):
    bad_key = cli(
        "--config=configs/keyframes.py:tiny",
        f"--workdir={tmp_path}",
        "--config.train.stpes=3",
        data_dir=data_dir,
    )
    assert bad_key.returncode != 0 and "stpes" in bad_key.stderr
    bad_preset = cli(
        "--config=configs/keyframes.py:huge", f"--workdir={tmp_path}", data_dir=data_dir
    )
    assert bad_preset.returncode != 0 and "unknown preset 'huge'" in bad_preset.stderr
    no_ckpt = cli(
        "--config=configs/keyframes.py:tiny",
        f"--workdir={tmp_path / 'empty'}",
        "--mode=sample",
        data_dir=data_dir,
    )
    assert no_ckpt.returncode == 2 and "No checkpoint found" in no_ckpt.stderr
