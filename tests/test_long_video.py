"""experiments/long_video.py end to end at the tiny preset (2 training steps per model: tests
the pipeline, not the models), and the causal DiT rollout continuing given latent frames."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import long_video as lv
from experiments.long_video_generation import Lengths
from experiments.long_video_metrics import METRICS, long_video_metrics
from experiments.long_video_summary import differences


def test_lengths_reach_eight_times_the_trained_length():
    for frames, latents in ((5, 2), (9, 3), (17, 5)):
        n = Lengths(frames, latents, chunk=1)
        assert n.target == 8 * frames and n.given == 1 + 4 * (n.given_latents - 1) < frames
        assert 1 + 4 * (n.chunks - 1) >= n.target  # causal: decoded latents cover the target
        assert n.dit_latents >= n.chunks and n.keyframes >= n.target
        assert (n.keyframes - n.given) % (frames - n.given) == 0  # whole keyframe windows


class StubFeatures:
    """FeatureCache's interface with cheap features (per clip: mean, std and two pixels)
    instead of I3D, to test the windowing of FVD without seconds of I3D per clip."""

    def extractor(self, protocol):
        return protocol

    def features(self, protocol, videos):
        assert videos.shape[1] == protocol.clip_length
        flat = videos.reshape(len(videos), -1)
        return np.stack([flat.mean(1), flat.std(1), flat[:, 0], flat[:, -1]], axis=1)


def test_window_fvd_scores_each_window_and_all_windows_pooled():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (6, 18, 8, 8, 1)).astype(np.float32)  # 2 windows of 9 frames
    video = np.concatenate([real[:3, :9], real[3:, :9] * 0.2 + 0.5], axis=1)  # window 1 drifts
    m = long_video_metrics(
        video, real, dataset="moving_digits", window=9, fvd_videos=3, cache=StubFeatures()
    )
    assert m["starts"] == [0, 9] and m["fvd_reason"] is None
    fvd = m["windows"]["fvd"]
    assert len(fvd) == 2 and fvd[0] < fvd[1] and fvd[0] < m["whole"]["fvd"] < fvd[1]
    assert set(m["windows"]) == {*METRICS["moving_digits"], "fvd"}
    off = long_video_metrics(video, real, dataset="moving_digits", window=9, fvd_videos=1)
    assert off["windows"]["fvd"] == [None, None] and "FVD off" in off["fvd_reason"]
    per_clip = m["per_clip"]  # the means above are NaN-aware means of these
    assert per_clip["windows"]["count_drift"].shape == (2, 3)  # windows x clips
    np.testing.assert_allclose(
        np.nanmean(per_clip["windows"]["count_drift"], axis=1), m["windows"]["count_drift"]
    )


def test_whole_clip_metrics_score_the_generated_frames_and_empty_scenes_violate_nothing():
    from cascade.data.builders import bouncing_shapes as bs

    clips = bs.render_chunk([np.random.default_rng(s) for s in range(4)], 40, 32)
    real = np.stack([c["video"] for c in clips]).astype(np.float32) / 127.5 - 1.0
    shapes = np.full(bs.MAX_OBJECTS, -1)  # the scene with no object: background and occluder
    empty = bs.render(np.zeros((40, bs.MAX_OBJECTS, 2)), shapes, shapes, 32)[0] / 127.5 - 1.0
    faded = real.copy()
    faded[:, 5:] = empty[5:]  # a continuation that loses every object after 5 given frames

    def scores(video):
        return long_video_metrics(video, real, dataset="bouncing_shapes", window=10, given=5)

    kept, lost = scores(real), scores(faded)
    counts = kept["per_clip"]["whole"]
    assert np.all(counts["empty_scene"] == 0) and np.all(counts["count_drift"] == 0)
    assert kept["whole"]["teleports"] == 0  # the real clips continue without a jump
    whole = lost["per_clip"]["whole"]  # the given frames' objects do not count as kept
    assert np.all(whole["empty_scene"] == 1)
    np.testing.assert_array_equal(
        whole["count_drift"], lost["per_clip"]["windows"]["count_drift"][1]
    )
    assert np.all(whole["count_drift"] >= 1)  # every clip had at least one object to lose
    for metric in ("teleports", "permanence_violations"):  # undefined, not a perfect 0
        assert np.isnan(whole[metric]).all() and np.isnan(lost["windows"][metric][1])
    assert lost["windows"]["empty_scene"] == [0, 1, 1, 1]


def test_differences_say_which_method_is_better_beyond_the_noise():
    rng = np.random.default_rng(1)
    ref = [rng.normal(0.5, 0.05, 16) for _ in range(3)]  # per training seed, per clip

    def arrays(shift):  # one run's arrays per seed: identity higher and drift lower are better
        return [
            {
                **{f"{m}__whole__identity": x + shift.get(m, 0.0) for m in lv.METHODS},
                **{f"{m}__whole__count_drift": 1.0 - x for m in lv.METHODS},
                # the cascade's clips hold no digit to fit: undefined, not a difference
                **{
                    f"{m}__whole__cv_residual": x * 0 + (np.nan if m == "cascade" else 1.0)
                    for m in lv.METHODS
                },
                **{f"{m}__whole__empty_scene": x * 0 for m in lv.METHODS},
            }
            for x in ref
        ]

    rows = differences("moving_digits", lv.METHODS, arrays({"causal_dit": 0.2}), samples=200)
    got = {(r["method"], r["metric"]): r["verdict"] for r in rows}
    assert got[("causal_dit", "identity")] == "causal_dit better"
    assert got[("cascade", "identity")] == "inconclusive"  # the same clips: difference 0
    assert got[("cascade", "cv_residual")] == "undefined"
    rows = differences("moving_digits", lv.METHODS, arrays({"cascade": -0.2}), samples=200)
    assert {(r["method"], r["metric"]): r["verdict"] for r in rows}[
        ("cascade", "identity")
    ] == "latent_dit better"


@pytest.mark.slow
def test_tiny_run_through_main_writes_every_output(data_dir, tmp_path, capsys):
    out, workdirs = tmp_path / "out", tmp_path / "workdirs"
    argv = ["long_video", "--preset=tiny", f"--out={out}", f"--data_dir={data_dir}"]
    assert lv.main([*argv, f"--workdirs={workdirs}"]) == 0
    for name in ("results.md", "results.csv", "results.json", "metrics_vs_frame.png"):
        assert (out / name).stat().st_size > 500, name
    for dataset in lv.DATASETS:
        for suffix in (".gif", ".mp4"):
            assert (out / f"side_by_side_{dataset}{suffix}").stat().st_size > 1000
    rows = list(csv.DictReader((out / "results.csv").open()))
    windows = ["whole", *(f"w{k}" for k in range(lv.LENGTH))]  # 8 x the window: 8 windows
    assert [(r["dataset"], r["method"], r["window"]) for r in rows] == [
        (d, m, w) for d in lv.DATASETS for m in lv.METHODS for w in windows
    ]
    for r in rows:  # every metric of the data set is filled (NaN: computed but undefined)
        assert all(r[k] != "" for k in METRICS[r["dataset"]]), r
        assert r["fvd"] == ""  # tiny: FVD off (and 5-frame windows are too short for I3D)
        if r["window"] == "whole":
            assert float(r["seconds_per_frame"]) > 0 and float(r["gflops_per_frame"]) > 0
    result = json.loads((out / "results.json").read_text())
    for d in result["datasets"]:
        assert d["target"] == 8 * d["window"] == 40 and d["given"] == 1
        for r in d["results"]:
            assert r["video_shape"][1] == d["target"] and r["loops_counted_once"] == 0
        assert d["results"][0]["metrics"]["starts"] == list(range(0, 40, 5))
    assert result["environment"]["commit"] and result["environment"]["cpu"]
    md = (out / "results.md").read_text()
    assert "training seeds [0], sampling seeds [0]" in md and "FVD: FVD off (fvd_videos=0)" in md
    assert "Against the bidirectional DiT" in md
    diffs = list(csv.DictReader((out / "differences.csv").open()))
    assert [(r["dataset"], r["method"], r["metric"]) for r in diffs] == [
        (d, m, k) for d in lv.DATASETS for m in ("causal_dit", "cascade") for k in METRICS[d]
    ]
    assert lv.main([*argv, "--workdirs=", "--seeds=0"]) == 2  # a bad flag: one line, exit 2
    assert lv.main([*argv, "--workdirs=", "--train_seeds=0"]) == 2
    # Rerun: every (data set, training seed) read back from OUT/runs, nothing trained again.
    assert lv.main([*argv, f"--workdirs={workdirs}"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["runs"]["computed"] == [] and len(again["runs"]["reused"]) == 2
    assert list(csv.DictReader((out / "results.csv").open())) == rows
    # One data set on its own: its finished run is read back, the report covers only it.
    assert lv.main([*argv, f"--workdirs={workdirs}", "--datasets=bouncing_shapes"]) == 0
    alone = json.loads((out / "results.json").read_text())
    assert [d["dataset"] for d in alone["datasets"]] == ["bouncing_shapes"]
    assert alone["runs"]["computed"] == [] and len(alone["runs"]["reused"]) == 1
    capsys.readouterr()
    assert lv.main([*argv, f"--workdirs={workdirs}", "--datasets=bouncing_shapes,kinetics"]) == 2
    assert "unknown kinetics; choose from bouncing_shapes,moving_digits" in capsys.readouterr().err

    # The rollout continuing given latents equals the unconditioned rollout when the given
    # chunk is the one it would have drawn itself (same keys: same context noise).
    from cascade.sampling.rollout import ChunkRollout
    from cascade.stages.stage import ShapeMismatchError
    from cascade.training.trained import load_trained

    causal = load_trained(next(workdirs.glob("lv_causal_moving_digits-*")))
    # 2 training steps leave the adaLN-zero gates at ~0 (the context would not matter at all).
    leaves, treedef = jax.tree.flatten(causal.params)
    causal.params = jax.tree.unflatten(treedef, [
        x + 0.3 * jax.random.normal(jax.random.key(i), x.shape, x.dtype)
        if jnp.issubdtype(x.dtype, jnp.floating) and not np.any(np.asarray(x)) else x
        for i, x in enumerate(leaves)
    ])  # fmt: skip
    rollout = ChunkRollout(causal)
    cond, key = {"label": np.array([1, 2], np.int32)}, jax.random.key(3)
    free = rollout.latents(cond, key, 4)
    given = rollout.latents(cond, key, 4, given=free[:, :1])
    np.testing.assert_allclose(given, free, atol=1e-4)
    assert rollout.step._cache_size() == 1 and rollout.prefill._cache_size() == 1
    other = rollout.latents(cond, key, 4, given=free[:, :1] + 1.0)
    assert np.abs(other[:, 1:] - free[:, 1:]).max() > 1e-3  # the given context is attended to
    with pytest.raises(ShapeMismatchError, match="given latents"):
        rollout.latents(cond, key, 4, given=free[:, :, :2])
