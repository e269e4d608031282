"""Both experiment scripts end to end on the tiny presets, sharing one workdir root and one
set of trained stages (the comparison's five stages, trained once for every test here).
Their table, verdict, budget and hashing logic is tested on
synthetic results, without training, in test_experiment_reports.py."""

import csv
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `experiments` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from experiments import cascade_vs_single_stage as comparison  # noqa: E402
from experiments import cascade_vs_single_stage_report as comparison_report  # noqa: E402
from experiments import vdm_ablations  # noqa: E402


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, list(rows[0].keys()) if rows else []


def is_finite_number(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# -- end to end, one set of trained stages ---------------------------------------------------
@pytest.fixture(scope="module")
def shared_dirs(data_dir, tmp_path_factory):
    """One data_dir and one workdir root for both experiments, so they share trained stages."""
    return {"data_dir": data_dir, "workdirs": tmp_path_factory.mktemp("workdirs")}


@pytest.fixture(scope="module")
def comparison_run(shared_dirs, tmp_path_factory):
    """The comparison, trained once (five stages, 2 steps each) for every slow test."""
    out = tmp_path_factory.mktemp("cascade_vs_single_stage")
    result = comparison.run(
        out, preset="tiny", fvd_videos=2, num_videos=2, steps_scale=0.5, **shared_dirs
    )
    return out, result


@pytest.mark.slow
def test_cascade_vs_single_stage_writes_a_matched_budget_comparison(comparison_run):
    out, result = comparison_run
    for name in ("results.md", "results.csv", "results.json", "stages.csv", "comparison.png"):
        assert (out / name).stat().st_size > 0, name
    for kind in ("cascade", "single_stage"):
        for name in ("final.gif", "final_grid.png", "stages.gif", "timing.json"):
            assert (out / kind / name).stat().st_size > 0, (kind, name)

    rows, columns = read_csv(out / "results.csv")
    assert columns == comparison_report.COLUMNS
    assert [r["pipeline"] for r in rows] == ["cascade", "single_stage"]
    for r in rows:  # 16-frame clips: FVD is defined; everything measured is a finite number
        for key in (
            "params",
            "train_flops",
            "sampling_flops_per_video",
            "sampling_seconds_per_video",
            "fvd",
            "kvd",
        ):
            assert is_finite_number(r[key]) and float(r[key]) >= 0, (r["pipeline"], key)
        assert float(r["params"]) > 0 and float(r["train_flops"]) > 0
    assert rows[0]["final_shape"] == "16x16x16x1" and rows[1]["final_shape"] == "17x16x16x1"

    # The budget: single-stage FLOPs = its steps x its per-step FLOPs, and the ratio reported
    # is the one realised; the cascade's stages kept their (scaled) preset steps.
    saved = json.loads((out / "results.json").read_text())
    budget, pipelines = saved["budget"], saved["pipelines"]
    cascade_flops = pipelines["cascade"]["train_flops"]
    single_flops = pipelines["single_stage"]["train_flops"]
    assert budget["cascade_total"] == pytest.approx(cascade_flops)
    assert single_flops / cascade_flops == pytest.approx(budget["ratio"])
    for name, stage in pipelines["single_stage"]["train"].items():
        assert stage["steps"] == budget["steps"][name]
        per_steps = stage["flops_per_step"] * stage["steps"]
        assert stage["total_flops"] == pytest.approx(per_steps + (stage.get("fixed_flops") or 0))
    assert {s["steps"] for s in pipelines["cascade"]["train"].values()} == {2}
    # The DiT's step pays for encoding its batch with the frozen VAE (on-the-fly latents).
    dit_step = budget["latent_dit_step"]
    assert dit_step["flops_per_step"] == pytest.approx(
        dit_step["dit_step"] + dit_step["vae_encode"]
    )
    # One FVD protocol for both, on the same number of videos.
    protocols = [p["fvd"]["protocol"] for p in pipelines.values()]
    assert protocols[0] == protocols[1] and protocols[0]["clip_length"] == 16
    assert f"{budget['ratio']:.3f} x the cascade's" in (out / "results.md").read_text()


@pytest.mark.slow
def test_vdm_ablations_reuse_trained_stages_and_judge_from_the_numbers(
    comparison_run, shared_dirs, tmp_path, monkeypatch
):
    """The whole ablation script with its variants collapsed onto one keyframe model and the
    comparison's spatial SR (the variants' configs are checked in a fast test): one new stage
    trained, and FVD off (--fvd_videos=0), so the verdicts fall back to identity stability."""
    models = dict(vdm_ablations.MODELS)
    for variant in ("keyframes_extra_images", "keyframes_no_temporal"):
        models[variant] = models["keyframes"]
    models["spatial_sr_no_aug"] = models["spatial_sr"]
    monkeypatch.setattr(vdm_ablations, "MODELS", models)
    result = vdm_ablations.run(
        tmp_path, preset="tiny", fvd_videos=0, num_videos=2, steps_scale=0.5, **shared_dirs
    )
    for name in ("results.md", "results.csv", "results.json", "ablations.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    # Same config, same workdir: trained once. The SR stage is the comparison's own.
    train = result["train"]
    assert len({str(t["workdir"]) for t in train.values()}) == 2
    cascade_sr = comparison_run[1]["pipelines"]["cascade"]["train"]["spatial_sr"]["workdir"]
    assert str(train["spatial_sr"]["workdir"]) == str(cascade_sr)

    rows, columns = read_csv(tmp_path / "results.csv")
    assert columns == vdm_ablations.CSV_COLUMNS
    assert [(r["ablation"], r["setting"]) for r in rows] == [
        ("joint image-video training", "0 extra images / clip"),
        ("joint image-video training", "4 extra images / clip"),
        ("classifier-free guidance", "w = 0"),
        ("classifier-free guidance", "w = 1"),
        ("classifier-free guidance", "w = 2"),
        ("temporal mixing", "factorized space-time attention"),
        ("temporal mixing", "none (per-frame image model)"),
        ("SR noise augmentation", "on (keyframe samples -> SR)"),
        ("SR noise augmentation", "off (keyframe samples -> SR)"),
    ]
    for r in rows:
        assert r["fvd"] == "" and r["paper_direction"] and r["agrees"]
    for r in rows[-2:]:
        assert is_finite_number(r["sr_psnr"]) and is_finite_number(r["sr_psnr_bilinear"])
    # One model, the same labels and key: its rows hold the same numbers, so every verdict
    # between two of its settings is a tie, or n/a where no digit could be tracked.
    same = (0, 1, 2, 5, 6)
    assert len({rows[i]["identity_stability"] + rows[i]["label_match"] for i in same}) == 1
    assert rows[1]["agrees"] == rows[6]["agrees"] == rows[8]["agrees"]
    assert rows[1]["agrees"] in ("tie", "n/a")
    assert json.loads((tmp_path / "results.json").read_text())["rows"][1]["verdict_metric"] == (
        "identity_stability"
    )
