"""experiments/continuation_methods.py: the verdict rules, and one end-to-end run through its
main at the tiny preset (2 training steps per data set: tests the pipeline, not the methods)."""

import csv
import json

import numpy as np
import pytest

from experiments import continuation_methods as cm
from experiments import continuation_methods_report as report


def test_verdicts_say_inconclusive_inside_the_noise():
    rng = np.random.default_rng(0)
    ref = [rng.normal(20.0, 1.0, size=16) for _ in range(3)]  # per seed, per clip

    def verdict(shift, spread):
        ours = [x + shift + rng.normal(0, spread, x.shape) for x in ref]  # paired clips
        return report.verdict_psnr(report.psnr_difference(ours, ref, samples=200))

    assert verdict(0.0, 0.01) == "inconclusive"
    assert verdict(1.0, 0.1) == "reconstruction better"
    assert verdict(-1.0, 0.1) == "replacement better"
    one = report.psnr_difference([ref[0][:1] + 5.0], [ref[0][:1]], samples=50)
    assert one["value"] == pytest.approx(5.0)
    assert report.verdict_psnr(one) == "inconclusive"  # one clip: no spread to judge by
    assert report.verdict_fvd(136.0, 451.0, 50.0) == "reconstruction better"  # VDM's numbers
    assert report.verdict_fvd(440.0, 451.0, 50.0) == "inconclusive"
    assert report.verdict_fvd(500.0, 451.0, 20.0) == "replacement better"
    assert report.verdict_fvd(None, 451.0, 20.0) == "n/a"


@pytest.mark.slow
def test_tiny_run_through_main_writes_table_csv_plot(data_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["continuation_methods", "--preset=tiny", f"--out={out}", f"--data_dir={data_dir}"]
    assert cm.main([*argv, f"--workdirs={tmp_path / 'workdirs'}"]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    methods = [
        "replacement",
        "reconstruction w_r=1",
        "reconstruction w_r=2",
        "reconstruction w_r=5",
    ]
    assert [(r["dataset"], r["task"], r["method"]) for r in rows] == [
        (d, t, m) for d in cm.DATASETS for m in methods for t in ("prediction", "4x extension")
    ]
    assert all(np.isfinite(float(r["psnr"])) for r in rows)
    shapes = [r for r in rows if r["dataset"] == "bouncing_shapes" and r["task"] != "prediction"]
    assert all(r["teleports"] != "" for r in shapes)  # physics over the whole extended clip
    assert {r["verdict"].split(";")[0] for r in rows} <= {
        "reference", "PSNR: inconclusive", "PSNR: reconstruction better", "PSNR: replacement better"
    }  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    assert [d["target"] for d in result["datasets"]] == [16, 16]  # 4 x the 4-frame window
    assert result["environment"]["commit"] and result["environment"]["cpu"]
    md = (out / "results.md").read_text()
    assert "FVD 136 vs replacement 451" in md and "seeds 0 (training" in md
    assert (out / "error_vs_offset.png").stat().st_size > 1000
    assert sorted(result["runs"]["computed"]) == [f"{d}/seed0" for d in sorted(cm.DATASETS)]
    # Rerun: every (data set, seed) read back from OUT/runs, nothing measured again.
    assert cm.main([*argv, f"--workdirs={tmp_path / 'workdirs'}"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["runs"]["computed"] == [] and len(again["runs"]["reused"]) == 2
    assert [r["psnr"] for r in csv.DictReader((out / "results.csv").open())] == [
        r["psnr"] for r in rows
    ]
    assert cm.main([*argv, "--workdirs="]) == 2  # a bad flag: one line, exit 2
