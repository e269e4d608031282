"""The VDM ablations end to end on their `tiny` config preset, and a rerun after an interruption.
Their statistics, verdicts and reports are tested without training in test_experiment_reports.py.
"""

from pathlib import Path

import pytest
from experiment_helpers import finite, read_csv, stand_in_i3d, tiny  # tests/ is on sys.path

from experiments import common, lab, runs, stats, vdm_ablations


@pytest.fixture(scope="module")
def ablation_run(data_dir, tmp_path_factory):
    """The whole ablation script on its tiny preset, every ablation and both seeds, with the
    trained variants collapsed onto the reference keyframe model (a variant costs a
    compilation; their configs are checked in a fast test) and I3D's network replaced by a
    cheap stand-in (`stand_in_i3d`). The distilled students are real: one halving round of
    each stage per seed."""
    with pytest.MonkeyPatch.context() as patch:
        collapse_variants(patch)
        stand_in_i3d(patch)
        exp = tiny("vdm_ablations", data_dir, tmp_path_factory)
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
    gifs = sorted((out / "gifs").glob("*.gif"))  # one per setting: every run is new here
    assert len(gifs) == len(rows) and all(g.stat().st_size > 1000 for g in gifs)
    verdicts, _ = read_csv(out / "verdicts.csv")
    assert {v["ablation"] for v in verdicts} == set(vdm_ablations.ABLATIONS)
    assert {v["verdict"] for v in verdicts} <= set(stats.VERDICTS)


@pytest.mark.slow
def test_vdm_ablations_rerun_reuses_and_an_interruption_redoes_only_what_was_cut(
    ablation_run, monkeypatch
):
    exp, result = ablation_run
    collapse_variants(monkeypatch)
    stand_in_i3d(monkeypatch)
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
