"""The cascade-vs-single-stage experiment end to end on its `tiny` config preset. Its statistics,
verdicts, configs and reports are tested on synthetic measurements, without training, in
test_experiment_reports.py; the VDM ablations' tiny run is test_vdm_ablations_run.py (its own
file, so the two long runs can go to different test workers)."""

from pathlib import Path

import numpy as np
import pytest
from experiment_helpers import finite, read_csv, stand_in_i3d, tiny  # tests/ is on sys.path

from experiments import cascade_vs_single_stage as comparison
from experiments import stats, vae_ceiling


@pytest.fixture(scope="module")
def comparison_run(data_dir, tmp_path_factory):
    """The whole comparison on its tiny preset, I3D's network replaced by a cheap stand-in."""
    with pytest.MonkeyPatch.context() as patch:
        stand_in_i3d(patch)
        exp = tiny("cascade_vs_single_stage", data_dir, tmp_path_factory)
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
    half = ["cascade at 0.5x steps", "single_stage at 0.5x steps"]  # the same stages, 4 steps
    early = ["cascade at 0.5x training", "single_stage at 0.5x training"]  # checkpoints of step 1
    students = ["cascade, distilled to 4 steps", "single_stage, distilled to 4 steps"]
    assert [r["pipeline"] for r in rows] == ["cascade", "single_stage", *half, *early, *students]
    assert [r["sample_steps"] for r in rows[:4:2]] == [
        "keyframes 8 + temporal_sr 8 + spatial_sr 8",
        "keyframes 4 + temporal_sr 4 + spatial_sr 4",
    ]
    for full, fewer in ((rows[0], rows[2]), (rows[1], rows[3])):  # fewer steps, fewer FLOPs
        assert float(fewer["sampling_flops_per_video"]) < float(full["sampling_flops_per_video"])
        assert fewer["train_flops"] == full["train_flops"]
    for full, earlier in ((rows[0], rows[4]), (rows[1], rows[5])):  # less trained, same sampler
        assert float(earlier["train_flops"]) <= float(full["train_flops"])  # a 1-step DiT: equal
        assert earlier["sample_steps"] == full["sample_steps"]
    assert float(rows[4]["train_flops"]) < float(rows[0]["train_flops"])  # step 1 of 2
    assert rows[4]["train_steps"] == "keyframes 1 + temporal_sr 1 + spatial_sr 1"
    # Students: every sampled stage distilled 8 -> 4 steps (one round), on the teachers' FLOPs.
    for full, half_steps, student in ((rows[0], rows[2], rows[6]), (rows[1], rows[3], rows[7])):
        assert student["sample_steps"] == half_steps["sample_steps"]
        assert student["train_flops"] == full["train_flops"]
        assert float(student["sampling_flops_per_video"]) < float(full["sampling_flops_per_video"])
    for seed in result["seeds"]:
        facts = seed["pipelines"]["single_stage, distilled to 4 steps"]
        teacher = seed["pipelines"]["single_stage"]["train"]["latent_dit"]["workdir"]
        distilled = facts["distillation"]["latent_dit"]
        assert distilled["rounds"] == 1 and distilled["optimizer_steps"] == 1
        assert distilled["workdir"] != teacher and Path(distilled["workdir"]).is_dir()
        cascade = seed["pipelines"]["cascade, distilled to 4 steps"]["distillation"]
        assert set(cascade) == {"keyframes", "temporal_sr", "spatial_sr"}
    assert "Rows 'distilled to k steps'" in (out / "results.md").read_text()
    for plot in ("quality_vs_sampling_cost.png", "quality_vs_training_flops.png"):
        assert (out / plot).stat().st_size > 0
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


@pytest.mark.slow
def test_vae_ceiling_measures_each_seeds_vae_on_its_test_clips(comparison_run):
    exp, result = comparison_run
    ceiling = vae_ceiling.run(exp)  # the comparison's VAEs, reused through their markers
    vaes = [
        s["pipelines"]["single_stage"]["train"]["video_vae"]["workdir"] for s in result["seeds"]
    ]
    assert [s["workdir"] for s in ceiling["seeds"]] == [str(w) for w in vaes]
    table = ceiling["table"]
    assert list(table) == [
        "real test clips",
        "VAE reconstruction",
        "single stage, generated (results.json)",
    ]
    assert len(table["VAE reconstruction"]["psnr"]) == exp.seeds
    assert all(np.isfinite(table["VAE reconstruction"]["psnr"]))
    # The generated row is the comparison's own per-seed means.
    single = next(s for s in result["settings"] if s["setting"] == "single_stage")
    assert table["single stage, generated (results.json)"]["label_match"] == pytest.approx(
        single["label_match"]["per_seed"]
    )
    assert "VAE reconstruction" in (Path(exp.out) / "vae_ceiling.md").read_text()
    assert (Path(exp.out) / "runs" / "vae_reconstruction" / "seed0" / "done.json").exists()
    np.testing.assert_equal(vae_ceiling.run(exp)["table"], table)  # read back, not redone
