"""The logic both experiment scripts rest on, without training anything: experiment config
files and their overrides, FLOP budget matching, bootstrap intervals and verdicts, finished
runs and their markers, config hashing, the ablation variants' configs, the Inception-Score
analogue, the FVD they use, and their table writers. The reports written from synthetic
measurements are in test_experiment_report_writers.py; the scripts end to end in
test_experiments.py and test_vdm_ablations_run.py."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from experiment_helpers import read_csv  # tests/ is on sys.path

from cascade import json_io
from cascade.evaluation.aggregate import finite_mean
from experiments import (
    budget,
    common,
    expconfig,
    lab,
    runs,
    stats,
    tables,
    vdm_ablations,
)
from experiments import cascade_vs_single_stage as comparison

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT_CONFIGS = REPO / "configs" / "experiments"


# -- the logic the scripts rest on -----------------------------------------------------------
def test_budget_matching_keeps_the_preset_ratio_and_lands_nearest_the_cascade():
    per_step = {"video_vae": 10.0, "latent_dit": 5.0}
    got = budget.match_budget(1000.0, per_step, {"video_vae": 100, "latent_dit": 100})
    # 1000 FLOPs at 15 per (VAE step + DiT step): 66.67 of each, rounded.
    assert got["steps"] == {"video_vae": 67, "latent_dit": 67}
    assert got["single_stage_total"] == 67 * 15
    assert got["ratio"] == pytest.approx(1.005)
    # A tiny budget still trains each stage for at least one step, and says so in the ratio.
    small = budget.match_budget(1.0, per_step, {"video_vae": 4, "latent_dit": 4})
    assert small["steps"] == {"video_vae": 1, "latent_dit": 1} and small["ratio"] == 15.0
    # One-off FLOPs (latents encoded once per clip) come out of the budget before the steps.
    fixed = budget.match_budget(1000.0, per_step, {"video_vae": 100, "latent_dit": 100}, 250.0)
    assert fixed["steps"] == {"video_vae": 50, "latent_dit": 50}
    assert fixed["single_stage_total"] == 50 * 15 + 250.0


def test_experiment_configs_load_with_overrides_and_refuse_mistakes(capsys):
    from cascade.configs import ConfigError

    for path in sorted(EXPERIMENT_CONFIGS.glob("*.py")):
        # Config files are data: they import cascade.configs / cascade.models only.
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        cascade_imports = {m for m in imported if m.startswith("cascade")}
        assert all(m == "cascade" or m.startswith("cascade.models") for m in cascade_imports)
        for preset in ("tiny", "cpu", "accelerator"):
            config = expconfig.load(f"{path}:{preset}")
            module = comparison if config.experiment == comparison.NAME else vdm_ablations
            module.check(config)
    spec = "experiments/vdm_ablations:cpu"  # resolved in configs/
    config = expconfig.load(
        spec, [("seeds", "5"), ("ablations", "joint_training,cfg"), ("cfg.scales", "0,3")]
    )
    assert config.seeds == 5 and config.cfg.scales == (0, 3)
    assert expconfig.names(config.ablations, vdm_ablations.ABLATIONS, "ablations") == [
        "joint_training",
        "cfg",
    ]
    cpu = expconfig.load(spec)
    assert cpu.seeds >= 3 and cpu.real_videos >= 128 and cpu.seeds * cpu.videos_per_seed >= 128
    with pytest.raises(ConfigError, match="unknown.*'gan'"):
        expconfig.names("cfg,gan", vdm_ablations.ABLATIONS, "ablations")
    with pytest.raises(ConfigError, match="num_test"):
        vdm_ablations.check(expconfig.load(spec, [("seeds", "50")]))
    with pytest.raises(ConfigError, match="student_steps"):
        vdm_ablations.check(expconfig.load(spec, [("distillation.student_steps", "(3,)")]))
    comparison_spec = "experiments/cascade_vs_single_stage:cpu"
    swept = expconfig.load(comparison_spec, [("step_fractions", "0.5,0.125")])
    assert swept.step_fractions == (0.5, 0.125)
    for key in ("step_fractions", "budget_fractions"):
        with pytest.raises(ConfigError, match=rf"{key}.*\(0, 1\).*\(0.5, 1.0\)"):
            comparison.check(expconfig.load(comparison_spec, [(key, "0.5,1.0")]))
    with pytest.raises(ConfigError, match=r"students.steps: 3 is not keyframes's 64"):
        comparison.check(expconfig.load(comparison_spec, [("students.steps", "8,3")]))
    comparison.check(expconfig.load(comparison_spec, [("students.steps", "()")]))  # none: fine
    # From the command line: one line, exit 2, nothing run.
    argv = ["vdm_ablations", f"--config={spec}", "--config.sedes=3"]
    assert vdm_ablations.main(argv) == 2
    assert "Did you mean 'seeds'" in capsys.readouterr().err
    assert comparison.main(["x", "--config.ablations=cfg"]) == 2  # not a key of that config


def test_bootstrap_intervals_and_verdicts():
    rng = np.random.default_rng(0)
    low = [rng.normal(0.0, 1.0, 40) for _ in range(3)]
    high = [x + 2.0 for x in low]  # the same clips shifted: paired, far above the noise
    noisy = [rng.normal(0.05, 1.0, 40) for _ in range(3)]
    kw = {"samples": 200, "confidence": 0.95}
    up = stats.compare(low, high, finite_mean, +1, **kw)
    assert up["paired"] and up["value"] == pytest.approx(2.0)
    assert up["low"] == pytest.approx(2.0) and up["verdict"] == "agrees"  # paired: no spread
    assert stats.compare(low, high, finite_mean, -1, **kw)["verdict"] == "disagrees"
    assert stats.compare(low, noisy, finite_mean, +1, **kw)["verdict"] == "inconclusive"
    unpaired = stats.compare(low, [noisy[0][:10]], finite_mean, +1, **kw)
    assert not unpaired["paired"] and unpaired["low"] < unpaired["high"]
    assert stats.verdict(float("nan"), 1.0, 1) == "inconclusive"
    assert stats.mean_std([1.0, 3.0, float("nan")]) == (2.0, pytest.approx(2**0.5))
    spread = stats.bootstrap(low, finite_mean, samples=100)
    assert spread["low"] < spread["value"] < spread["high"] and spread["std"] > 0


def test_inception_score_analogue_of_the_digit_reader():
    from cascade.evaluation import digits

    one_hot = np.eye(10)
    assert digits.inception_score(one_hot) == pytest.approx(10.0)  # confident and diverse
    assert digits.inception_score(np.tile(one_hot[3], (5, 1))) == pytest.approx(1.0)
    assert digits.inception_score(np.full((4, 10), 0.1)) == pytest.approx(1.0)  # unsure
    with_unread = np.vstack([one_hot[:2], np.full((1, 10), np.nan)])
    assert digits.inception_score(with_unread) == pytest.approx(2.0)
    assert np.isnan(digits.inception_score(np.full((2, 10), np.nan)))
    blank = np.full((2, 4, 16, 16, 1), -1.0, np.float32)  # nothing to read
    assert np.isnan(digits.clip_class_probs(blank)).all()


def test_finished_runs_are_read_back_and_unfinished_ones_redone(tmp_path):
    store = runs.RunStore(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3.0)}, {"note": "first"}

    arrays, info = store.get("cfg/w0/seed0", compute)
    again = runs.RunStore(tmp_path).get("cfg/w0/seed0", compute)  # a later process
    assert len(calls) == 1 and info == again[1] == {"note": "first"}
    np.testing.assert_array_equal(again[0]["x"], arrays["x"])
    (tmp_path / "cfg/w0/seed0" / runs.MARKER).unlink()  # killed before the marker
    runs.RunStore(tmp_path).get("cfg/w0/seed0", compute)
    assert len(calls) == 2


def test_runs_made_under_another_config_are_measured_again(tmp_path):
    exp = {"seeds": 3, "out": "a", "train_steps": {"keyframes": 400}, "cfg": {"scales": [0, 2]}}
    stages = {"keyframes": "1234abcd"}
    more = {**exp, "seeds": 5, "out": "b", "cfg": {"scales": [0, 1, 2]}}  # which runs, where
    same = runs.fingerprint(more, stages)
    assert same == runs.fingerprint(exp, stages)
    longer = runs.fingerprint({**exp, "train_steps": {"keyframes": 800}}, stages)
    edited_preset = runs.fingerprint(exp, {"keyframes": "99999999"})
    assert len({same, longer, edited_preset}) == 3
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.zeros(1)}, {}

    runs.RunStore(tmp_path, same).get("cfg/w0/seed0", compute)
    runs.RunStore(tmp_path, same).get("cfg/w0/seed0", compute)
    assert len(calls) == 1
    stale = runs.RunStore(tmp_path, longer)
    stale.get("cfg/w0/seed0", compute)
    assert len(calls) == 2 and stale.stale == ["cfg/w0/seed0"]
    assert runs.RunStore(tmp_path, longer).done("cfg/w0/seed0")  # replaced, marked anew


def test_config_hash_ignores_where_data_lives_but_not_what_is_trained(tmp_path):
    a = common.stage_config("keyframes", "tiny", tmp_path / "a")
    b = common.stage_config("keyframes", "tiny", tmp_path / "b", {"train.log_every": 1})
    c = common.stage_config("keyframes", "tiny", tmp_path / "a", {"view.extra_images": 4})
    assert common.config_hash(a) == common.config_hash(b) != common.config_hash(c)
    # A field added later keeps every earlier workdir's hash while it is at its no-op default.
    before_the_field = a.copy_and_resolve_references()
    with before_the_field.unlocked():
        del before_the_field.data["image_pool"]
    assert common.config_hash(before_the_field) == common.config_hash(a)
    pooled = {"view.extra_images": 4, "data.image_pool": 64}
    assert common.config_hash(c) != common.config_hash(
        common.stage_config("keyframes", "tiny", tmp_path / "a", pooled)
    )
    assert a.data.frames == 17 and a.train.num_samples == 0
    # The root may move: dependent stages name their VAE by workdir name only.
    dit = common.stage_config("latent_dit", "tiny", tmp_path)
    dit.vae.workdir = str(tmp_path / "x" / "video_vae-1234")
    moved = dit.copy_and_resolve_references()
    moved.vae.workdir = str(tmp_path / "y" / "video_vae-1234")
    assert common.config_hash(dit) == common.config_hash(moved)
    assert common.workdir_for(tmp_path, "keyframes", a).name == f"keyframes-{common.config_hash(a)}"


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
    json_io.write_json(
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


def test_every_ablation_variant_is_a_valid_distinct_config(tmp_path):
    exp = expconfig.load("experiments/vdm_ablations:tiny", [("data_dir", str(tmp_path))])
    lab_ = lab.Lab(exp)
    variants = [
        ("keyframes", {}),
        ("keyframes", {"view.extra_images": 4, "data.num_train": 8}),
        ("keyframes", {"view.extra_images": 4, "data.num_train": 8, "data.image_pool": 16}),
        ("keyframes", {"model.temporal_mixing": "conv3d"}),
        ("keyframes", {"model.temporal_mixing": "temporal_conv"}),
        ("keyframes", {"model.temporal_mixing": "none"}),
        ("keyframes", {"diffusion.parametrization": "eps", "diffusion.loss": "eps_mse"}),
        ("spatial_sr", {}),
        ("spatial_sr", {"diffusion.parametrization": "eps", "diffusion.loss": "eps_mse"}),
        ("spatial_sr", {"sr.noise_aug": False, "model.use_aug_cond": False}),
    ]
    configs = [lab_.config(stage, 0, o) for stage, o in variants]
    for config in configs[:7]:  # >= 9 frames: FVD applies
        assert (config.view.frames, config.view.frame_stride) == (16, 1)
    assert configs[1].data.num_train == 8 and configs[0].data.num_train == 16
    hashes = {common.config_hash(c) for c in configs}
    assert len(hashes) == len(configs)
    assert common.config_hash(lab_.config("keyframes", 1)) not in hashes  # seeds train anew
    # A distilled student names its teacher by workdir name: the root may move.
    a = common.distill_config(tmp_path / "x" / "keyframes-1", 4, 2, 1, "tiny", 0)
    b = common.distill_config(tmp_path / "y" / "keyframes-1", 4, 2, 1, "tiny", 0)
    assert common.config_hash(a) == common.config_hash(b)
