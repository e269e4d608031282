"""The logic both experiment scripts rest on, without training anything: FLOP budget
matching, ablation verdicts, config hashing, the ablation variants' configs, the FVD they
use, and their tables, CSVs, JSONs and plots written from synthetic results. The scripts
end to end are in test_experiments.py."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `experiments` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from experiments import cascade_vs_single_stage as comparison  # noqa: E402
from experiments import cascade_vs_single_stage_report as comparison_report  # noqa: E402
from experiments import common, tables, vdm_ablations  # noqa: E402

NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, list(rows[0].keys()) if rows else []


# -- the logic the scripts rest on -----------------------------------------------------------
def test_budget_matching_keeps_the_preset_ratio_and_lands_nearest_the_cascade():
    per_step = {"video_vae": 10.0, "latent_dit": 5.0}
    got = comparison.match_budget(1000.0, per_step, {"video_vae": 100, "latent_dit": 100})
    # 1000 FLOPs at 15 per (VAE step + DiT step): 66.67 of each, rounded.
    assert got["steps"] == {"video_vae": 67, "latent_dit": 67}
    assert got["single_stage_total"] == 67 * 15
    assert got["ratio"] == pytest.approx(1.005)
    # A tiny budget still trains each stage for at least one step, and says so in the ratio.
    small = comparison.match_budget(1.0, per_step, {"video_vae": 4, "latent_dit": 4})
    assert small["steps"] == {"video_vae": 1, "latent_dit": 1} and small["ratio"] == 15.0
    # One-off FLOPs (latents encoded once per clip) come out of the budget before the steps.
    fixed = comparison.match_budget(1000.0, per_step, {"video_vae": 100, "latent_dit": 100}, 250.0)
    assert fixed["steps"] == {"video_vae": 50, "latent_dit": 50}
    assert fixed["single_stage_total"] == 50 * 15 + 250.0


def test_ablation_verdicts_follow_the_numbers():
    def row(ablation, fvd, label_match=0.5, identity=0.5):
        return {
            "ablation": ablation,
            "fvd": fvd,
            "label_match": label_match,
            "identity_stability": identity,
        }

    rows = [
        row("joint image-video training", 200.0),
        row("joint image-video training", 100.0),  # more images, lower FVD: agrees
        row("classifier-free guidance", 100.0, label_match=0.5),
        row("classifier-free guidance", 150.0, label_match=0.5),  # FVD worse, label match tie
        row("classifier-free guidance", 90.0, label_match=0.9),  # FVD better, label match up
        row("temporal mixing", 100.0),
        row("temporal mixing", 100.5),  # within 1%: a tie, not a direction
        row("SR noise augmentation", float("nan"), identity=0.9),
        row("SR noise augmentation", 50.0, identity=0.4),  # no FVD: identity, lower = worse
    ]
    vdm_ablations.add_verdicts(rows)
    assert [r["agrees"] for r in rows] == [
        "reference",
        "yes",
        "reference",
        "FVD worse: yes, label match up: tie",
        "FVD worse: no, label match up: yes",
        "reference",
        "tie",
        "reference",
        "yes",
    ]
    assert rows[-1]["verdict_metric"] == "identity_stability"
    # A missing number (no digit tracked: NaN) is 'n/a', never a direction.
    assert vdm_ablations.moved(float("nan"), 1.0, "lower") == "n/a"
    assert vdm_ablations.moved(None, 1.0, "lower") == "n/a"


def test_config_hash_ignores_where_data_lives_but_not_what_is_trained(tmp_path):
    a = common.stage_config("keyframes", "tiny", tmp_path / "a")
    b = common.stage_config("keyframes", "tiny", tmp_path / "b", {"train.log_every": 1})
    c = common.stage_config("keyframes", "tiny", tmp_path / "a", {"view.extra_images": 4})
    assert common.config_hash(a) == common.config_hash(b) != common.config_hash(c)
    assert a.data.frames == 17 and a.train.num_samples == 0
    # The root may move: dependent stages name their VAE by workdir name only.
    dit = common.stage_config("latent_dit", "tiny", tmp_path)
    dit.vae.workdir = str(tmp_path / "x" / "video_vae-1234")
    moved = dit.copy_and_resolve_references()
    moved.vae.workdir = str(tmp_path / "y" / "video_vae-1234")
    assert common.config_hash(dit) == common.config_hash(moved)
    assert common.workdir_for(tmp_path, "keyframes", a).name == f"keyframes-{common.config_hash(a)}"


def test_every_ablation_model_is_a_valid_distinct_config(tmp_path):
    configs = {
        k: vdm_ablations.model_config(k, "tiny", tmp_path, 0.5) for k in vdm_ablations.MODELS
    }
    assert set(configs) == {
        "keyframes",
        "keyframes_extra_images",
        "keyframes_no_temporal",
        "spatial_sr",
        "spatial_sr_no_aug",
    }
    for key in ("keyframes", "keyframes_extra_images", "keyframes_no_temporal"):
        view = configs[key].view
        assert (view.frames, view.frame_stride) == (16, 1), key  # >= 9 frames: FVD applies
    assert configs["keyframes_extra_images"].view.extra_images == 4
    assert configs["keyframes_no_temporal"].model.temporal_mixing == "none"
    assert configs["spatial_sr_no_aug"].sr.noise_aug is False
    assert len({common.config_hash(c) for c in configs.values()}) == len(configs)
    assert {c.train.steps for c in configs.values()} == {2}  # tiny presets' 4 steps x 0.5


def test_table_writers_format_numbers_and_missing_values(tmp_path):
    assert [tables.fmt(v) for v in (None, float("nan"), True, 1234, 3e7, 0.123456, 2.5e6)] == [
        "n/a",
        "n/a",
        "yes",
        "1,234",
        "3.000e+07",
        "0.1235",
        "2.500e+06",
    ]
    assert tables.finite(np.float32(1.0)) and not tables.finite(float("inf"))
    assert not tables.finite(None) and not tables.finite("1")
    rows = [{"a": 1, "b": "x|y"}, {"a": None}]
    assert tables.markdown_table(rows, ["a", "b"]).splitlines() == [
        "| a | b |",
        "|---|---|",
        "| 1 | x/y |",
        "| n/a | n/a |",
    ]
    tables.write_csv(tmp_path / "t.csv", rows, ["a", "b"])
    assert read_csv(tmp_path / "t.csv")[0] == [{"a": "1", "b": "x|y"}, {"a": "", "b": ""}]
    tables.write_json(
        tmp_path / "t.json", {"x": np.arange(2), "nan": float("nan"), "p": tmp_path, 1: np.bool_(1)}
    )
    assert json.loads((tmp_path / "t.json").read_text()) == {
        "x": [0, 1],
        "nan": None,
        "p": str(tmp_path),
        "1": True,
    }


def test_fvd_is_off_below_two_videos_or_nine_frames_and_real_features_are_cached():
    """The experiments' FVD is `evaluate.fvd_metrics`; their per-run cache is
    `fvd.FeatureCache` (checked here with a counting stand-in for the I3D extractor)."""
    from cascade.evaluation.evaluate import fvd_metrics
    from cascade.evaluation.fvd import FeatureCache, FVDProtocol

    clips = np.zeros((4, 16, 8, 8, 1), np.float32)
    assert fvd_metrics(clips, clips, 1)["fvd"] is None  # --fvd_videos=1: off
    assert "2" in fvd_metrics(clips, clips, 0)["reason"]
    assert fvd_metrics(clips[:, :8], clips[:, :8])["fvd"] is None  # I3D needs >= 9 frames

    calls = []

    class Extractor:
        protocol = FVDProtocol(num_videos=2)

        def __call__(self, videos):
            calls.append(len(videos))
            return np.full((len(videos), 3), float(videos.sum()))

    cache, extractor = FeatureCache(), Extractor()
    first = cache.features(extractor, clips)
    again = cache.features(extractor, clips.copy())  # same content: not recomputed
    other = cache.features(extractor, clips + 1)  # other content: computed
    assert calls == [4, 4] and first is again and other[0, 0] == clips.size


def synthetic_comparison(fvd=True):
    """A `cascade_vs_single_stage.run` result with round numbers, as the report reads it."""

    def pipeline(stages, sampled, fvd_value, shape):
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
            "final_shape": shape,
            "params": {"total": 300, **{n: 100 for n in stages}},
            "sampling": {
                "flops_per_video": 7.0,
                "flops_per_video_by_stage": {n: float(i + 1) for i, n in enumerate(sampled)},
                "seconds_per_video": 0.5,
                "seconds_per_video_by_stage": {n: 0.5 / len(sampled) for n in sampled},
                "timed_batch": 2,
            },
            "fvd": {"fvd": fvd_value, "kvd": 0.1, "num_fake": 2}
            if fvd
            else {"fvd": None, "reason": "FVD off: 1 videos per side (needs >= 2)"},
            "digits": {"label_match": 0.5, "identity_stability": float("nan"), "cv_residual": 2.0},
            "train": train,
            "train_flops": sum(s["total_flops"] for s in train.values()),
        }

    cascade = ("keyframes", "temporal_sr", "spatial_sr")
    single = ("video_vae", "latent_dit")
    return {
        "preset": "tiny",
        "num_videos": 2,
        "fvd_videos": 2,
        "guidance_scale": 0.0,
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
            "cascade": pipeline(cascade, cascade, 100.0, [16, 16, 16, 1]),
            "single_stage": pipeline(single, ("latent_dit", "vae_decode"), 200.0, [17, 16, 16, 1]),
        },
        "real_reference": {"digits": {"identity_stability": 0.9, "cv_residual": 0.3}},
    }


@pytest.mark.parametrize("fvd", [True, False])
def test_comparison_report_writes_tables_and_plot(tmp_path, fvd):
    result = synthetic_comparison(fvd)
    comparison_report.write_outputs(tmp_path, result)
    for name in ("results.md", "results.csv", "results.json", "stages.csv", "comparison.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows, columns = read_csv(tmp_path / "results.csv")
    assert columns == comparison_report.COLUMNS
    assert [(r["pipeline"], r["final_shape"]) for r in rows] == [
        ("cascade", "16x16x16x1"),
        ("single_stage", "17x16x16x1"),
    ]
    assert rows[0]["train_steps"] == "keyframes 2 + temporal_sr 2 + spatial_sr 2"
    assert rows[0]["fvd"] == ("100.0" if fvd else "") and rows[0]["identity_stability"] == "nan"
    stages, stage_columns = read_csv(tmp_path / "stages.csv")
    assert stage_columns == comparison_report.STAGE_COLUMNS
    assert [r["stage"] for r in stages] == [
        "keyframes",
        "temporal_sr",
        "spatial_sr",
        "video_vae",
        "latent_dit",
    ]
    # The VAE's share of sampling is its decode (2.0); the DiT's its own sampler (1.0).
    assert [float(r["sampling_flops_per_video"]) for r in stages[3:]] == [2.0, 1.0]
    md = (tmp_path / "results.md").read_text()
    assert "matched by XLA-counted FLOPs" in md and "Caveat" in md
    assert "0.500 x the cascade's" in md
    assert "keyframes 8, temporal_sr 8, spatial_sr 8 ancestral steps" in md
    assert ("FVD/KVD compare 2 generated" in md) == fvd
    assert ("FVD not computed: FVD off" in md) == (not fvd)
    assert json.loads((tmp_path / "results.json").read_text())["pipelines"]["cascade"][
        "digits"
    ] == {
        "label_match": 0.5,
        "identity_stability": None,  # JSON has no NaN
        "cv_residual": 2.0,
    }


def test_ablation_report_writes_tables_and_plot_from_rows(tmp_path):
    rows = []
    for ablation, settings in (
        ("joint image-video training", ("0 extra images / clip", "4 extra images / clip")),
        ("classifier-free guidance", ("w = 0", "w = 1", "w = 2")),
        ("temporal mixing", ("factorized space-time attention", "none (per-frame image model)")),
        ("SR noise augmentation", ("on (keyframe samples -> SR)", "off (keyframe samples -> SR)")),
    ):
        for i, setting in enumerate(settings):
            row = {
                "ablation": ablation,
                "setting": setting,
                "fvd": None,
                "kvd": None,
                "fvd_note": "FVD off: 1 videos per side (needs >= 2)",
                "label_match": 0.5 + 0.1 * i,
                "identity_stability": 0.8 - 0.1 * i,
                "cv_residual_px": float("nan"),
                "paper_direction": vdm_ablations.PAPER[ablation],
            }
            if ablation == "SR noise augmentation":
                row.update(sr_psnr=20.0 - i, sr_psnr_bilinear=18.0)
            rows.append(row)
    vdm_ablations.add_verdicts(rows)
    result = {
        "preset": "tiny",
        "num_videos": 2,
        "fvd_videos": 1,
        "rows": rows,
        "real_reference": {"keyframe_view": {"identity_stability": 1.0, "cv_residual": 0.2}},
    }
    vdm_ablations.write_outputs(tmp_path, result)
    for name in ("results.md", "results.csv", "results.json", "ablations.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    csv_rows, columns = read_csv(tmp_path / "results.csv")
    assert columns == vdm_ablations.CSV_COLUMNS
    # FVD off: every verdict is on identity stability (lower is worse, except more images).
    assert [r["agrees"] for r in csv_rows] == [
        "reference",
        "no",
        "reference",
        "label match up: yes",
        "label match up: yes",
        "reference",
        "yes",
        "reference",
        "yes",
    ]
    md = (tmp_path / "results.md").read_text()
    assert "| ablation | setting | our metric(s) | paper's direction | agrees? |" in md
    assert "identity_stability (higher is better; FVD was off" in md
    assert "SR PSNR 19, bilinear PSNR 18" in md


def test_notebook_is_valid_nbformat4():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and isinstance(nb["metadata"], dict)
    kinds = [cell["cell_type"] for cell in nb["cells"]]
    assert set(kinds) == {"markdown", "code"} and kinds.count("code") >= 7
    for cell in nb["cells"]:
        assert isinstance(cell["source"], list) and isinstance(cell["metadata"], dict)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and "execution_count" in cell
            compile("".join(cell["source"]), "cell", "exec")  # valid Python
