"""Joint audio-video generation: the AV DiT (cascade.models.av_dit) and its stage."""

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
    as long as the video (4 frames at 8 fps = 0.5 s)."""
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
    with pytest.raises(ConfigError, match="evaluate"):
        main.run(config, str(tmp_path), "evaluate")
