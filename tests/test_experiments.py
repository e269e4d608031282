"""Both experiments end to end on their `tiny` config presets, sharing one data_dir and one
workdir root. Their statistics, verdicts, configs and reports are tested on synthetic measurements,
without training, in test_experiment_reports.py."""

import csv
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `experiments` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from experiments import cascade_vs_single_stage as comparison  # noqa: E402
from experiments import common, expconfig, lab, runs, stats, vdm_ablations  # noqa: E402


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, list(rows[0].keys()) if rows else []


def finite(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


@pytest.fixture(scope="module")
def shared(data_dir, tmp_path_factory):
    """One data_dir and one workdir root for both experiments, so they share trained stages."""
    return {"data_dir": data_dir, "workdirs": str(tmp_path_factory.mktemp("workdirs"))}


def tiny(name, shared, out):
    overrides = [("out", str(out)), *shared.items()]
    return expconfig.load(f"experiments/{name}:tiny", overrides)


@pytest.fixture(scope="module")
def comparison_run(shared, tmp_path_factory):
    exp = tiny("cascade_vs_single_stage", shared, tmp_path_factory.mktemp("comparison"))
    return exp, comparison.run(exp)


@pytest.mark.slow
def test_cascade_vs_single_stage_tiny_fills_every_column(comparison_run):
    exp, result = comparison_run
    out = Path(exp.out)
    for name in ("results.md", "results.json", "pipelines.csv", "stages.csv", "verdicts.csv"):
        assert (out / name).stat().st_size > 0, name
    for kind in ("cascade", "single_stage"):  # seed 0's videos
        assert (out / kind / "final.gif").stat().st_size > 0
    rows, columns = read_csv(out / "pipelines.csv")
    assert [r["pipeline"] for r in rows] == ["cascade", "single_stage"]
    for r in rows:
        for key in ("params", "train_flops", "sampling_flops_per_video", "fvd_pooled", "kvd"):
            assert finite(r[key]), (r["pipeline"], key)
        for metric in ("fvd", "label_match", "seconds_per_video", "inception_score"):
            assert len(r[f"{metric}_per_seed"].split(";")) == exp.seeds, metric
        assert finite(r["fvd_pooled_std"]) and finite(r["seconds_per_video_std"])
    assert rows[0]["final_shape"] == "16x16x16x1" and rows[1]["final_shape"] == "17x16x16x1"
    assert {v["verdict"] for v in result["verdicts"]} <= set(stats.VERDICTS)

    # Each seed: the budget matched (single-stage FLOPs = steps x per-step FLOPs, the ratio
    # reported is the one realised), the cascade's stages at their scaled preset steps.
    for seed in result["seeds"]:
        budget, pipelines = seed["budget"], seed["pipelines"]
        cascade_flops = pipelines["cascade"]["train_flops"]
        assert budget["cascade_total"] == pytest.approx(cascade_flops)
        assert pipelines["single_stage"]["train_flops"] / cascade_flops == pytest.approx(
            budget["ratio"]
        )
        for name, stage in pipelines["single_stage"]["train"].items():
            assert stage["steps"] == budget["steps"][name]
        assert {s["steps"] for s in pipelines["cascade"]["train"].values()} == {2}
        dit = budget["latent_dit_step"]  # the DiT's step pays for encoding with the VAE
        assert dit["flops_per_step"] == pytest.approx(dit["dit_step"] + dit["vae_encode"])
    workdirs = [s["pipelines"]["cascade"]["train"]["keyframes"]["workdir"] for s in result["seeds"]]
    assert len(set(workdirs)) == exp.seeds  # every seed trains anew
    assert (
        f"{result['seeds'][0]['budget']['ratio']:.3f} x the cascade's"
        in (out / "results.md").read_text()
    )


@pytest.fixture(scope="module")
def ablation_run(comparison_run, shared, tmp_path_factory):
    """The whole ablation script on its tiny preset, every ablation and both seeds, with the
    trained variants collapsed onto the reference keyframe model (a variant costs a
    compilation; their configs are checked in a fast test). The distilled students are real:
    one halving round of each stage per seed."""
    with pytest.MonkeyPatch.context() as patch:
        collapse_variants(patch)
        exp = tiny("vdm_ablations", shared, tmp_path_factory.mktemp("ablations"))
        return exp, vdm_ablations.run(exp)


def collapse_variants(patch):
    trained = lab.Lab.trained

    def reference_model(self, stage, seed, overrides=None):
        return trained(self, stage, seed)

    patch.setattr(lab.Lab, "trained", reference_model)


@pytest.mark.slow
def test_vdm_ablations_tiny_fill_every_column(ablation_run):
    exp, result = ablation_run
    out = Path(exp.out)
    for name in ("results.md", "settings.csv", "verdicts.csv", "results.json", "ablations.png"):
        assert (out / name).stat().st_size > 0, name
    rows, _ = read_csv(out / "settings.csv")
    assert {r["ablation"] for r in rows} == set(vdm_ablations.ABLATIONS)
    assert [r["setting"] for r in rows if r["ablation"] == "cfg"] == ["w = 0", "w = 2"]
    for r in rows:  # every setting: FVD pooled over both seeds with its spread, each seed
        assert finite(r["fvd_pooled"]) and finite(r["fvd_pooled_std"]), r["setting"]
        for metric in ("fvd", "label_match", "identity_stability", "inception_score"):
            assert len(r[f"{metric}_per_seed"].split(";")) == exp.seeds, (r["setting"], metric)
    sr_rows = [r for r in rows if "ground-truth input" in r["setting"]]
    assert len(sr_rows) == 2 and all(finite(r["psnr_mean"]) for r in sr_rows)
    chain = [r for r in rows if r["setting"].startswith("chain")]
    assert len(chain) == 2 and all(finite(r["seconds_per_video_mean"]) for r in chain)
    verdicts, _ = read_csv(out / "verdicts.csv")
    assert {v["ablation"] for v in verdicts} == set(vdm_ablations.ABLATIONS)
    assert {v["verdict"] for v in verdicts} <= set(stats.VERDICTS)


@pytest.mark.slow
def test_vdm_ablations_rerun_reuses_and_an_interruption_redoes_only_what_was_cut(
    ablation_run, monkeypatch
):
    exp, result = ablation_run
    collapse_variants(monkeypatch)
    # Rerun: every run is read back, nothing trains.
    again = vdm_ablations.run(exp)
    assert again["runs"]["computed"] == [] and len(again["runs"]["reused"]) == len(
        result["runs"]["computed"]
    ) + len(result["runs"]["reused"])
    assert not any(again["train_seconds_this_call"].values())
    # Killed mid-way: one measurement before its marker was written, and its stage before its
    # marker (after its last checkpoint). Only that measurement is redone; the stage resumes
    # from its checkpoint instead of training again.
    key = "keyframes/mixing-none/w0/seed1"
    (Path(exp.out) / "runs" / key / runs.MARKER).unlink()
    stage = common.workdir_for(exp.workdirs, "keyframes", lab.Lab(exp).config("keyframes", 1))
    (stage / common.TRAINED).unlink()
    checkpoints = {p.name: p.stat().st_mtime for p in (stage / "checkpoints").iterdir()}
    resumed = vdm_ablations.run(exp)
    assert resumed["runs"]["computed"] == [key]
    assert (stage / common.TRAINED).is_file()
    assert {p.name: p.stat().st_mtime for p in (stage / "checkpoints").iterdir()} == checkpoints
