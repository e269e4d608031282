"""The experiments' reports written from synthetic measurements, without training: the VDM
ablations' summary, tables, plot and GIFs, and the cascade-vs-single-stage comparison's."""

import numpy as np
from experiment_helpers import read_csv, synthetic_setting  # tests/ is on sys.path

from experiments import cascade_vs_single_stage as comparison
from experiments import cascade_vs_single_stage_report as comparison_report
from experiments import expconfig, stats, summary, tables, vdm_ablations
from experiments import vdm_ablations_report as ablations_report


def test_ablation_summary_and_report_fill_every_column(tmp_path):
    rng = np.random.default_rng(1)
    exp = expconfig.load("experiments/vdm_ablations:tiny")
    settings = [
        synthetic_setting("cfg", "w = 0", 0.0, rng),
        synthetic_setting("cfg", "w = 2", 3.0, rng),
        synthetic_setting("parametrization", "spatial SR, v", 0.0, rng, sr=True),
        synthetic_setting("parametrization", "spatial SR, eps", 0.1, rng, sr=True),
    ]
    ablations = vdm_ablations.Ablations.__new__(vdm_ablations.Ablations)
    ablations.comparisons = []
    ablations.compare("cfg", "w = 0", "w = 2", "fvd", +1)
    ablations.compare("cfg", "w = 0", "w = 2", "inception_score", +1)
    ablations.compare("parametrization", "spatial SR, v", "spatial SR, eps", "psnr", -1)
    real = {"keyframes": rng.normal(0, 1, (8, 5)), "spatial_sr": rng.normal(0, 1, (8, 5))}
    # Runs keep their first clips for the GIFs; a run measured before that has none.
    settings[1]["runs"][0][0]["preview"] = rng.integers(0, 256, (4, 5, 16, 16, 1), np.uint8)
    gifs = ablations_report.write_gifs(tmp_path, settings)
    assert gifs == [{"ablation": "cfg", "setting": "w = 2", "path": "gifs/cfg-w-2.gif"}]
    assert (tmp_path / "gifs" / "cfg-w-2.gif").stat().st_size > 1000
    result = {
        "config": exp.to_dict(),
        **summary.summarize(settings, ablations.comparisons, real, exp),
        "gifs": gifs,
        "runs": {"reused": [], "computed": ["a"]},
        "seconds": 1.0,
        "environment": tables.environment(1.0),
    }
    verdicts = result["verdicts"]
    assert verdicts[0]["verdict"] == "agrees"  # features shifted by 3: FVD far worse at w = 2
    # A comparison's interval is its own: the same when the report holds only it.
    alone = summary.summarize(settings[2:], ablations.comparisons[2:], real, exp)["verdicts"]
    assert (alone[0]["low"], alone[0]["high"]) == (verdicts[2]["low"], verdicts[2]["high"])
    assert {v["verdict"] for v in verdicts} <= set(stats.VERDICTS)
    fvd = result["settings"][0]["fvd"]
    assert len(fvd["per_seed"]) == 2 and fvd["pooled"] > 0 and fvd["pooled_std"] > 0
    ablations_report.write_outputs(tmp_path, result)
    for name in ("results.md", "settings.csv", "verdicts.csv", "results.json", "ablations.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows, columns = read_csv(tmp_path / "settings.csv")
    # Every column some setting fills; none of a metric no setting measured (physics).
    assert set(columns) < set(ablations_report.SETTING_COLUMNS)
    assert "psnr_mean" in columns and "teleports_mean" not in columns
    for row in rows:  # every metric the setting measured has a mean, a std and each seed
        assert row["fvd_pooled"] and row["label_match_mean"] and row["inception_score_std"]
        assert len(row["identity_stability_per_seed"].split(";")) == 2
    assert rows[2]["psnr_mean"] and not rows[0]["psnr_mean"]
    vrows, vcolumns = read_csv(tmp_path / "verdicts.csv")
    assert vcolumns == ablations_report.VERDICT_COLUMNS
    assert [r["paper_direction"] for r in vrows] == ["up", "up", "down"]
    md = (tmp_path / "results.md").read_text()
    assert "FVD pooled ± bootstrap std" in md and "| verdict |" in md and "IS analogue" in md
    assert "## Samples" in md and "![](gifs/cfg-w-2.gif)" in md


def synthetic_seed_facts():
    """One seed's facts as `cascade_vs_single_stage.run_seed` returns them (round numbers)."""

    def pipeline(stages, sampled, shape):
        train = {
            n: {
                "flops_per_step": 10.0 * (i + 1),
                "steps": 2,
                "fixed_flops": 0.0,
                "total_flops": 20.0 * (i + 1),
                "seconds_this_run": 1.5,
                "workdir": f"/w/{n}-0",
            }
            for i, n in enumerate(stages)
        }
        return {
            "kind": "cascade" if "keyframes" in stages else "single_stage",
            "step_fraction": 1.0,
            "sample_steps": {n: 8 for n in sampled if n != "vae_decode"},
            "final_shape": shape,
            "params": {"total": 300, **{n: 100 for n in stages}},
            "sampling": {
                "flops_per_video": 7.0,
                "flops_per_video_by_stage": {n: float(i + 1) for i, n in enumerate(sampled)},
                "seconds_per_video": 0.5,
                "seconds_per_video_by_stage": {n: 0.5 / len(sampled) for n in sampled},
                "timed_batch": 2,
            },
            "train": train,
            "train_flops": sum(s["total_flops"] for s in train.values()),
        }

    cascade = ("keyframes", "temporal_sr", "spatial_sr")
    return {
        "sampling_steps": {"keyframes": 8, "temporal_sr": 8, "spatial_sr": 8, "latent_dit": 8},
        "scored_frames": 16,
        "budget": {
            "cascade_total": 120.0,
            "factor": 0.5,
            "single_stage_total": 60.0,
            "ratio": 0.5,
            "latent_dit_step": {"fixed_flops": 0.0},
        },
        "pipelines": {
            "cascade": pipeline(cascade, cascade, [16, 16, 16, 1]),
            "single_stage": pipeline(
                ("video_vae", "latent_dit"), ("latent_dit", "vae_decode"), [17, 16, 16, 1]
            ),
            # A checkpoint along training at the last step: the same training FLOPs (a tie).
            "cascade at 0.5x training": {
                **pipeline(cascade, cascade, [16, 16, 16, 1]),
                "budget_fraction": 0.5,
            },
        },
    }


def test_comparison_report_writes_tables_and_plot(tmp_path):
    rng = np.random.default_rng(2)
    exp = expconfig.load("experiments/cascade_vs_single_stage:tiny")
    kinds = (("cascade", 0.0), ("single_stage", 0.2), ("cascade at 0.5x training", 0.1))
    settings = [
        {**synthetic_setting("pipeline", kind, shift, rng), "view": "final"}
        for kind, shift in kinds
    ]
    comparisons = [
        {"ablation": "pipeline", "reference": "cascade", "setting": "single_stage",
         "metric": m, "expected": e, "paper": comparison.CLAIM}
        for m, e in (("fvd", -1), ("identity_stability", 1), ("seconds_per_video", -1))
    ]  # fmt: skip
    result = {
        "config": exp.to_dict(),
        **summary.summarize(settings, comparisons, {"final": rng.normal(0, 1, (8, 5))}, exp),
        "seeds": [synthetic_seed_facts()] * 2,
        "real_reference": {"digits": {"identity_stability": 0.9, "cv_residual": 0.3}},
        "runs": {"reused": ["seed0"], "computed": ["seed1"]},
        "seconds": 3.0,
        "environment": tables.environment(3.0),
    }
    comparison_report.write_outputs(tmp_path, result)
    files = ("results.md", "pipelines.csv", "stages.csv", "verdicts.csv", "comparison.png")
    for name in (*files, "quality_vs_sampling_cost.png", "quality_vs_training_flops.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows, columns = read_csv(tmp_path / "pipelines.csv")
    assert set(columns) < set(comparison_report.PIPELINE_COLUMNS)
    assert "identity_stability_mean" in columns and "ballistic_rmse_mean" not in columns
    assert [(r["pipeline"], r["final_shape"]) for r in rows] == [
        ("cascade", "16x16x16x1"),
        ("single_stage", "17x16x16x1"),
        ("cascade at 0.5x training", "16x16x16x1"),
    ]
    assert rows[0]["train_steps"] == "keyframes 2 + temporal_sr 2 + spatial_sr 2"
    for row in rows:
        assert all(row[c] != "" for c in columns)  # only the columns some row fills
    stages, stage_columns = read_csv(tmp_path / "stages.csv")
    assert stage_columns == comparison_report.STAGE_COLUMNS
    # The VAE's share of sampling is its decode (2.0); the DiT's its own sampler (1.0).
    assert [float(r["sampling_flops_per_video"]) for r in stages[3:]] == [2.0, 1.0]
    md = (tmp_path / "results.md").read_text()
    assert "0.500 x the cascade's" in md and "FVD pooled ± bootstrap std" in md
    assert "keyframes 8, temporal_sr 8, spatial_sr 8 ancestral steps" in md
    assert [r["verdict"] for r in read_csv(tmp_path / "verdicts.csv")[0]][0] in stats.VERDICTS
