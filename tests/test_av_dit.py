"""Joint audio-video generation: the AV DiT (cascade.models.av_dit) and its stage."""

import json
import subprocess

import jax
import numpy as np
import optax
import pytest
from conftest import tiny_config
from flax import nnx

from cascade.configs import ConfigError
from cascade.data import pipeline
from cascade.data.builders import bouncing_shapes_sound as bss
from cascade.diffusion import flow
from cascade.models.av_dit import av_positions
from cascade.models.dit import rope_tables
from cascade.stages import build_stage


def test_audio_tokens_share_the_frame_time_coordinate():
    frames, gh, gw, head_dim = 3, 2, 4, 12
    pos = av_positions(frames, gh, gw)
    video, audio = pos[: frames * gh * gw], pos[frames * gh * gw :]
    assert audio.shape == (frames, 3)
    np.testing.assert_array_equal(audio[:, 0], np.arange(frames))
    np.testing.assert_array_equal(video[:, 0], np.repeat(np.arange(frames), gh * gw))
    # The time part of the rotary tables of audio token t equals every patch of frame t's.
    axes = (4, 4, 4)
    cos, sin = rope_tables(pos, axes)
    half = head_dim // 2
    time_cols = np.r_[0 : axes[0] // 2, half : half + axes[0] // 2]
    for t in range(frames):
        for table in (cos, sin):
            frame_rows = table[t * gh * gw : (t + 1) * gh * gw][:, time_cols]
            np.testing.assert_array_equal(
                frame_rows,
                np.broadcast_to(table[frames * gh * gw + t, time_cols], frame_rows.shape),
            )


def probe(path) -> str:
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True).stderr


def test_av_stage_trains_and_samples_aligned_clips(data_dir):
    """On a fixed batch of real clips with sound: the packed batch holds each frame's pixels
    and its own log-mel slice; the loss falls over 20 steps; the sampler (with and without
    per-modality guidance) returns video and sound of the requested, aligned length."""
    config = tiny_config("av_dit", data_dir)
    stage = build_stage(config)
    clips = pipeline.test_clips(config.data, 4)
    batch = stage.make_batch(clips, np.random.default_rng(0))
    frames, res = config.view.frames, config.view.resolution
    assert batch["video"].shape == (4, frames, 1, 1, res * res * 3 + 16 * 64)
    video = stage.to_video(batch["video"])
    assert video.shape == (4, frames, res, res, 3)
    # The same random window of each clip's frames and of its sound (make_batch's draw).
    stored, spf = clips["video"], bss.SAMPLES_PER_FRAME
    starts = np.random.default_rng(0).integers(0, stored.shape[1] - frames + 1, size=4)
    factor = stored.shape[2] // res
    for i, s in enumerate(starts):
        window = stored[i, s : s + frames].reshape(frames, res, factor, res, factor, 3)
        np.testing.assert_allclose(video[i], window.mean((2, 4)), atol=1e-6)
        track = clips["audio"][i : i + 1, s * spf : (s + frames) * spf]
        mels = stage.unpack(batch["video"][i : i + 1])[1]
        np.testing.assert_allclose(mels, stage.audio_features(track), atol=1e-6)
    assert len(set(starts.tolist())) > 1  # the windows differ: a real test of alignment

    model = stage.build_model(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    key, tx = jax.random.key(1), optax.adam(3e-3)
    fixed = {k: jax.numpy.asarray(v) for k, v in batch.items()}

    @jax.jit
    def train(params, opt):
        (loss, metrics), g = jax.value_and_grad(
            lambda p: stage.loss(nnx.merge(graphdef, p), fixed, key), has_aux=True
        )(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, metrics

    opt, history = tx.init(params), []
    for _ in range(20):  # the same key: a fixed batch, times, noise and label dropout
        params, opt, metrics = train(params, opt)
        history.append({k: float(v) for k, v in metrics.items()})
    first, last = history[0], history[-1]
    assert last["loss"] < 0.7 * first["loss"], history
    assert last["loss_video"] < first["loss_video"] and last["loss_audio"] < first["loss_audio"]

    cond = {"label": np.array([0, 2])}
    outputs = {}
    for w in (0.0, 2.0):
        stage.config.sample.video_guidance = stage.config.sample.audio_guidance = w
        sample = jax.jit(lambda p, k: stage.sample(nnx.merge(graphdef, p), k, cond, steps=3))
        outputs[w] = np.asarray(sample(params, jax.random.key(3)))
    assert not np.allclose(outputs[0.0], outputs[2.0])  # guidance changes both modalities
    for a, b in zip(stage.unpack(outputs[0.0]), stage.unpack(outputs[2.0]), strict=True):
        assert not np.allclose(a, b)
    video, audio = stage.to_video(outputs[2.0]), stage.to_audio(outputs[2.0])
    assert video.shape == (2, frames, res, res, 3) and np.isfinite(video).all()
    assert audio.shape == (2, frames * spf) and audio.dtype == np.float32
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0


def _rows(packed):
    """Packed outputs [B, T, 1, 1, P] -> [B, T, P]."""
    return packed.reshape(*packed.shape[:2], -1)


def test_two_stage_modes_train_each_stage_and_sample_in_order(data_dir):
    """The two-stage baselines (config.av.mode) in the joint network: each clip of a batch
    trains one stage (times 0 / 1 for the other modality, loss on the generated one only); the
    loss falls; the sampler returns aligned video and sound, and its second pass leaves the
    first modality exactly as the first pass left it."""
    config = tiny_config("av_dit", data_dir)
    clips = pipeline.test_clips(config.data, 4)
    for mode in ("video_then_audio", "audio_then_video"):
        stage = build_stage(tiny_config("av_dit", data_dir, **{"av.mode": mode}))
        t = jax.numpy.linspace(0.1, 0.9, 64)
        (t_video, t_audio), (w_video, w_audio) = stage.modality_times(t, jax.random.key(0))
        first_t, first_w, second_t = (
            (t_video, w_video, t_audio)
            if mode == "video_then_audio"
            else (t_audio, w_audio, t_video)
        )
        second = np.asarray(first_w) == 0  # clips that train the second stage
        assert 0 < second.sum() < 64  # clean_prob 0.5: both stages in one batch
        np.testing.assert_array_equal(np.asarray(w_video) + np.asarray(w_audio), 1.0)
        np.testing.assert_array_equal(np.asarray(first_t)[second], 0.0)  # given clean
        np.testing.assert_array_equal(np.asarray(second_t)[~second], 1.0)  # absent (noise)
        np.testing.assert_allclose(np.asarray(first_t)[~second], np.asarray(t)[~second])

        batch = stage.make_batch(clips, np.random.default_rng(0))
        model = stage.build_model(nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)
        key, tx = jax.random.key(1), optax.adam(3e-3)
        fixed = {k: jax.numpy.asarray(v) for k, v in batch.items()}

        @jax.jit
        def train(params, opt, stage=stage, graphdef=graphdef, fixed=fixed, key=key, tx=tx):
            (_, metrics), g = jax.value_and_grad(
                lambda p: stage.loss(nnx.merge(graphdef, p), fixed, key), has_aux=True
            )(params)
            upd, opt = tx.update(g, opt, params)
            return optax.apply_updates(params, upd), opt, metrics

        opt, history = tx.init(params), []
        for _ in range(15):
            params, opt, metrics = train(params, opt)
            history.append(float(metrics["loss"]))
        assert history[-1] < 0.8 * history[0], (mode, history)

        cond = {"label": np.array([0, 2])}
        merged = nnx.merge(graphdef, params)
        out = np.asarray(stage.sample(merged, jax.random.key(3), cond, steps=2))
        frames, res = config.view.frames, config.view.resolution
        video, audio = stage.to_video(out), stage.to_audio(out)
        assert video.shape == (2, frames, res, res, 3) and np.isfinite(video).all()
        assert audio.shape == (2, frames * bss.SAMPLES_PER_FRAME) and np.isfinite(audio).all()
        # The first pass alone (the other modality still at its initial noise), then the
        # second from it: the first modality is unchanged by the second pass.
        velocity = stage.velocity_fn(merged, cond)
        first_cols = stage.video_columns if mode == "video_then_audio" else 1 - stage.video_columns

        def first_pass(z, t, velocity=velocity, first_cols=first_cols, mode=mode):
            one = jax.numpy.ones_like(t)
            tv, ta = (t, one) if mode == "video_then_audio" else (one, t)
            return velocity(z, tv, ta) * first_cols

        shape = (2, *stage.output_shape)
        z1 = np.asarray(flow.euler_sample(first_pass, shape, jax.random.key(3), 2))
        keep = first_cols.astype(bool)
        np.testing.assert_allclose(_rows(out)[..., keep], _rows(z1)[..., keep], atol=1e-5)
        noise = np.asarray(jax.random.normal(jax.random.key(3), shape))
        np.testing.assert_allclose(_rows(z1)[..., ~keep], _rows(noise)[..., ~keep], atol=1e-6)
        assert not np.allclose(_rows(out)[..., ~keep], _rows(noise)[..., ~keep])


def test_av_stage_refuses_clips_without_sound(data_dir):
    from cascade import config_checks

    with pytest.raises(ConfigError, match="data.sound"):
        config_checks.validate(tiny_config("av_dit", data_dir, **{"data.sound": False}))
    with pytest.raises(ConfigError, match="frame_stride"):
        config_checks.validate(tiny_config("av_dit", data_dir, **{"view.frame_stride": 2}))
    stage = build_stage(tiny_config("av_dit", data_dir))
    clips = pipeline.test_clips(tiny_config("av_dit", data_dir, **{"data.sound": False}).data, 2)
    with pytest.raises(ConfigError, match="sound"):
        stage.make_batch(clips, np.random.default_rng(0))


@pytest.mark.slow
def test_av_dit_cli_trains_and_writes_mp4_with_sound(data_dir, tmp_path):
    """cascade.main: a tiny training run, then --mode=sample writes MP4s with an audio stream
    as long as the video (4 frames at 8 fps = 0.5 s); --mode=evaluate writes them too, with
    metrics.json holding the sync scores, audio statistics, physics and their references."""
    from cascade import main

    config = tiny_config("av_dit", data_dir)
    main.run(config, str(tmp_path), "train")
    out = main.run(config, str(tmp_path), "sample", num_samples=2)
    names = sorted(p.name for p in out.glob("av_dit_final_*.mp4"))
    assert names == ["av_dit_final_0.mp4", "av_dit_final_1.mp4"]
    for name in names:
        info = probe(out / name)
        assert "Audio:" in info and "Video:" in info and "Duration: 00:00:00.5" in info, info
    assert (out / "av_dit_final.gif").exists()

    for p in out.glob("av_dit_final_*.mp4"):
        p.unlink()
    metrics = main.run(config, str(tmp_path), "evaluate", num_samples=3)
    assert sorted(p.name for p in out.glob("av_dit_final_*.mp4")) == [
        f"av_dit_final_{i}.mp4" for i in range(3)
    ]
    assert "Audio:" in probe(out / "av_dit_final_2.mp4")
    stored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert stored["av_mode"] == "joint" and stored["num_videos"] == 3
    assert stored["network_evaluations_per_sample"] == config.sample.steps
    for scores in (stored["sync"], stored["real_reference"]["sync"]):
        assert set(scores) >= {"f1", "precision", "recall", "within_1", "offset_abs_mean"}
    real = stored["real_reference"]["physics"]  # the real windows obey the physics
    assert real["teleports"] == 0 and real["shape_constancy"] == 1
    for stats in (stored["audio_statistics"], stored["roundtrip_reference"]["audio_statistics"]):
        assert set(stats) == {"w1_loudness_db", "w1_centroid_hz", "w1_onset_rate"}
        assert np.isfinite(stats["w1_loudness_db"])
    assert set(stored["physics"]) >= {"teleports", "permanence_violations", "ballistic_rmse"}
    assert stored["fvd"]["fvd"] is None and "9 frames" in stored["fvd"]["reason"]
    assert stored["sampling_cost"]["flops_per_video"] > 0
    assert metrics["sync"] == stored["sync"]


@pytest.mark.slow
def test_joint_vs_two_stage_experiment_fills_every_column(data_dir, tmp_path):
    """experiments.av_joint_vs_two_stage --preset=tiny through its main (1 seed, to stay
    cheap): the three modes trained on the same budget, evaluated, every column written
    (FVD off at 4 frames, with the reason), an MP4 with sound per mode, the plot."""
    import csv

    from experiments import av_joint_vs_two_stage as exp
    from experiments.av_joint_vs_two_stage_report import COLUMNS

    out = tmp_path / "out"
    argv = ["x", "--preset=tiny", "--seeds=1", f"--out={out}", f"--data_dir={data_dir}"]
    assert exp.main([*argv, f"--workdirs={tmp_path / 'w'}"]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    runs = [r for r in rows if r["seed"] == "0"]
    assert [r["mode"] for r in runs] == list(exp.MODES)
    # NaN where the tiny clips give no reading (no matched onset, no ballistic fit).
    no_reading = {"fvd", "ballistic_rmse", "sync_offset_abs_mean"}
    for row in runs:
        for column in COLUMNS:
            assert row[column] != "" or column in no_reading, (column, row)
            if column not in no_reading | {"mode"}:
                assert np.isfinite(float(row[column])), (column, row)
    joint, v2a, a2v = runs
    assert joint["train_steps"] == v2a["train_steps"] == a2v["train_steps"] == "4"
    # The same training budget: XLA-counted FLOPs per step within 1%; two passes to sample.
    flops = [float(r["train_flops_per_step"]) for r in runs]
    assert max(flops) < 1.01 * min(flops)
    assert int(v2a["network_evaluations"]) == int(a2v["network_evaluations"]) == 8
    assert int(joint["network_evaluations"]) == 4
    refs = {r["mode"] for r in rows if r["seed"] == "mean"}
    assert {"real clips", "real, log-mel round trip", *exp.MODES} <= refs
    md = (out / "results.md").read_text()
    assert "shorter than the 9 frames" in md and "Commit " in md and "CPU " in md
    for mode in exp.MODES:
        assert "Audio:" in probe(out / f"{mode}.mp4")
    assert (out / "metrics.png").stat().st_size > 0
    result = json.loads((out / "results.json").read_text())
    assert result["seeds"] == [0] and result["environment"]["wall_seconds"] > 0
