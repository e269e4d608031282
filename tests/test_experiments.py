"""The research-use layer end to end on tiny presets: both experiment scripts (sharing trained
stages through one workdir root) and the walkthrough notebook, plus the budget matching and
the ablation verdicts against hand-computed cases."""

import csv
import json
import math
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `experiments` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from experiments import cascade_vs_single_stage as comparison  # noqa: E402
from experiments import common, vdm_ablations  # noqa: E402

NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, list(rows[0].keys()) if rows else []


def is_finite_number(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# -- fast: the logic the scripts rest on -----------------------------------------------------------
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


def test_config_hash_ignores_where_data_lives_but_not_what_is_trained(tmp_path):
    a = common.stage_config("base", "tiny", tmp_path / "a")
    b = common.stage_config("base", "tiny", tmp_path / "b", {"train.log_every": 1})
    c = common.stage_config("base", "tiny", tmp_path / "a", {"view.extra_images": 4})
    assert common.config_hash(a) == common.config_hash(b) != common.config_hash(c)
    assert a.data.frames == 17 and a.train.num_samples == 0


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


# -- slow: end to end --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_dirs(data_dir, tmp_path_factory):
    """One data_dir and one workdir root for both experiments, so they share trained stages."""
    return {"data_dir": data_dir, "workdirs": tmp_path_factory.mktemp("workdirs")}


@pytest.fixture(scope="module")
def comparison_run(shared_dirs, tmp_path_factory):
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
    assert columns == comparison.COLUMNS
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
    # One FVD protocol for both, on the same number of videos.
    protocols = [p["fvd"]["protocol"] for p in pipelines.values()]
    assert protocols[0] == protocols[1] and protocols[0]["clip_length"] == 16
    md = (out / "results.md").read_text()
    assert "matched by XLA-counted FLOPs" in md and "Caveat" in md
    assert f"{budget['ratio']:.3f} x the cascade's" in md


@pytest.mark.slow
def test_vdm_ablations_table_reuses_stages_and_judges_from_the_numbers(
    comparison_run, shared_dirs, tmp_path
):
    result = vdm_ablations.run(
        tmp_path, preset="tiny", fvd_videos=2, num_videos=2, steps_scale=0.5, **shared_dirs
    )
    for name in ("results.md", "results.csv", "results.json", "ablations.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    # The SR stage with noise augmentation is the cascade experiment's own: reused, not retrained.
    cascade_sr = comparison_run[1]["pipelines"]["cascade"]["train"]["spatial_sr"]["workdir"]
    assert str(result["train"]["spatial_sr"]["workdir"]) == str(cascade_sr)

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
        ("SR noise augmentation", "on (base samples -> SR)"),
        ("SR noise augmentation", "off (base samples -> SR)"),
    ]
    for r in rows:
        assert is_finite_number(r["fvd"]) and is_finite_number(r["kvd"]), r["setting"]
        assert r["paper_direction"]
    for r in rows[-2:]:
        assert is_finite_number(r["sr_psnr"]) and is_finite_number(r["sr_psnr_bilinear"])
    # The same model, labels and key: the w = 0 row is the 0-images row is the attention row.
    assert rows[0]["fvd"] == rows[2]["fvd"] == rows[5]["fvd"]
    # Verdicts recomputed from the CSV's own numbers.
    fvd = [float(r["fvd"]) for r in rows]
    assert rows[1]["agrees"] == vdm_ablations.moved(fvd[1], fvd[0], "lower")
    assert rows[6]["agrees"] == vdm_ablations.moved(fvd[6], fvd[5], "higher")
    assert rows[8]["agrees"] == vdm_ablations.moved(fvd[8], fvd[7], "higher")
    assert rows[3]["agrees"].startswith(
        f"FVD worse: {vdm_ablations.moved(fvd[3], fvd[2], 'higher')}"
    )
    header = "| ablation | setting | our metric(s) | paper's direction | agrees? |"
    assert header in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_walkthrough_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    """Every code cell in order, in one namespace, from the repo root, writing under tmp_path."""
    # Import what the notebook imports first: flax/treescope probe for IPython at import time
    # and must not find the stand-in below (IPython is not a dependency of this project).
    import cascade.evaluation.evaluate  # noqa: F401
    import cascade.runners  # noqa: F401
    import cascade.train  # noqa: F401
    import cascade.trained  # noqa: F401

    shown = []
    display_module = types.ModuleType("IPython.display")

    class Image:  # what the notebook displays: files it has just written
        def __init__(self, filename):
            assert Path(filename).stat().st_size > 0, filename
            self.filename = filename

    display_module.Image = Image
    display_module.display = lambda *objs: shown.extend(o.filename for o in objs)
    ipython = types.ModuleType("IPython")
    ipython.display = display_module
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_module)
    monkeypatch.setenv("CASCADE_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.chdir(REPO)

    namespace = {"__name__": "__main__"}
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    for i, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"walkthrough.ipynb cell {i}", "exec"), namespace)

    names = [Path(p).name for p in shown]
    assert names[:3] == ["clip.gif", "views.png", "base_samples.png"]
    assert {"stages_large.gif", "final_large.png"} <= set(names)
    assert all(Path(p).is_relative_to(tmp_path) for p in shown)
    assert namespace["samples"].shape == (4, 4, 8, 8, 1)
    assert namespace["report"]["shapes"] == {
        "base": [4, 8, 8, 1],
        "temporal_sr": [8, 8, 8, 1],
        "spatial_sr": [8, 16, 16, 1],
    }
