"""The quickstart's console: library output goes to the log file, progress bars stay visible."""

import logging
import os
import sys
import warnings

from absl import logging as absl_logging

from cascade import console
from cascade.quickstart import summary


def test_log_to_file_keeps_the_terminal_for_progress_bars_only(tmp_path, capfd):
    log = tmp_path / "run.log"
    with console.log_to_file(log):
        print("a library print")
        os.write(1, b"C++ on fd 1\n")
        os.write(2, b"XLA warning on fd 2\n")
        logging.getLogger("tensorflow_datasets").info("Building moving_digits locally")
        absl_logging.warning("an absl warning")
        warnings.warn("a python warning", stacklevel=1)
        sys.stderr.write("progress bar 50%\n")
    print("after the block")
    terminal = capfd.readouterr()
    text = log.read_text()
    for line in (
        "a library print",
        "C++ on fd 1",
        "XLA warning on fd 2",
        "Building moving_digits locally",
        "an absl warning",
        "a python warning",
    ):
        assert line in text and line not in terminal.out + terminal.err, line
    assert "progress bar 50%" in terminal.err and "progress bar" not in text
    assert terminal.out == "after the block\n"  # everything restored


def test_log_to_file_restores_the_streams_when_the_block_raises(tmp_path, capfd):
    try:
        with console.log_to_file(tmp_path / "run.log"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    print("visible")
    os.write(2, b"fd 2 visible\n")
    terminal = capfd.readouterr()
    assert terminal.out == "visible\n" and "fd 2 visible" in terminal.err


def test_quickstart_summary_names_times_metrics_and_references(tmp_path):
    spent = dict(first_step_with_compile=20.0, input_pipeline=3.0, train_steps=90.0)
    report = {
        "seconds": {"data": 12.0, "train_stages_side_by_side": 130.0, "cascade_evaluation": 40.0},
        "stage_seconds": {
            "keyframes": {"train_seconds": 130.0},
            "temporal_sr": {"train_seconds": 125.0, "score_seconds": 7.0},
        },
        "training_time_spent": {
            "keyframes": dict(spent, checkpoints=1.0, samples=0.0),
            "temporal_sr": dict(spent, checkpoints=1.0, samples=0.0),
        },
        "cascade": {
            "fvd": {"fvd": 123.4},
            "digits": {"identity_stability": 0.81, "label_match": 0.84},
            "real_reference": {"digits": {"identity_stability": 0.95, "label_match": 0.75}},
        },
        "super_resolution": {
            "temporal_sr": {
                "model": {"psnr": 24.5},
                "baselines": {"repeat": {"psnr": 19.0}, "linear": {"psnr": 21.5}},
                "content": {
                    "model": {"digits": {"identity_stability": 0.51}},
                    "baselines": {"linear": {"digits": {"identity_stability": 0.78}}},
                    "target": {"digits": {"identity_stability": 0.81}},
                },
            }
        },
    }
    text = summary(report, tmp_path, 182.0)
    assert "done in 3.0 min" in text
    assert "train stages side by side" in text and "2.2 min" in text  # 130 s
    assert "side by side" in text and "7 s" in text  # the temporal SR stage's scoring
    assert "20 s" in text and "90 s" in text  # compile vs steady steps
    assert "16 s" in text  # the rest of the 130 s: model and data setup, the final write
    assert "identity stability" in text and "0.81" in text and "real clips 0.95" in text
    assert "temporal_sr PSNR" in text and "linear 21.5" in text  # the best baseline
    assert "temporal_sr identity, given real input" in text and "linear 0.78, real 0.81" in text
    assert "quickstart.log" in text and "tensorboard --logdir" in text
