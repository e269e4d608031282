"""Sound: bouncing_shapes with sound, MP4s with an audio stream, the sync metric, log-mels."""

import subprocess

import numpy as np
import pytest

from cascade import video_io
from cascade.configs import ConfigError
from cascade.data import loading, pipeline
from cascade.data.builders import bouncing_shapes_sound as bss
from cascade.evaluation import audio_repr, av_sync, av_sync_validation
from cascade.models import audio_frontend

SIZES = dict(num_train=4, num_test=6, frames=32, resolution=32)


def cfg(data_dir, **kw):
    return dict(name="bouncing_shapes", data_dir=data_dir, **SIZES, **kw)


@pytest.fixture(scope="module")
def clips(data_dir):
    """The test split with sound (float audio, states with impacts) and without."""
    with_sound = pipeline.test_clips(cfg(data_dir, sound=True), SIZES["num_test"])
    without = pipeline.test_clips(cfg(data_dir), SIZES["num_test"])
    return with_sound, without


def stored_impacts(states, i):
    return states["impact_time"][i][states["impact_object"][i] >= 0].astype(np.float64)


def test_sound_data_matches_impacts(clips):
    sound, video_only = clips
    # The video and the states of bouncing_shapes are untouched by the sound variant.
    np.testing.assert_array_equal(sound["video"], video_only["video"])
    for key, value in video_only["states"].items():
        np.testing.assert_array_equal(sound["states"][key], value)
    assert "audio" not in video_only
    spf = bss.SAMPLES_PER_FRAME
    assert sound["audio"].shape == (SIZES["num_test"], SIZES["frames"] * spf)
    onsets, impacts, isolated = [], [], 0
    for i, track in enumerate(sound["audio"]):
        times = stored_impacts(sound["states"], i)
        impacts.append(times)
        onsets.append(av_sync.detect_onsets(track, bss.SAMPLE_RATE, bss.FPS))
        # Sample-exact: an isolated impact is silent before its start sample, loud after it.
        for t in times:
            start = int(np.rint(t * spf))
            if np.abs(times[times < t] - t).min(initial=9) < 0.3 * bss.FPS or start < 64:
                continue  # an earlier sound is still ringing
            before = np.abs(track[start - 64 : start]).max()
            after = np.abs(track[start : start + 64]).max()
            assert before < 6 * bss.NOISE_FLOOR < after, (i, t, before, after)
            isolated += 1
    assert isolated >= 3 and sum(len(t) for t in impacts) >= 8
    scores = av_sync.sync_scores(onsets, impacts, tolerance=0.1)
    # Every onset is a stored impact; impacts closer than MIN_GAP are heard as one onset.
    assert scores["precision"] == 1.0 and scores["recall"] >= 0.85, scores
    assert abs(scores["offset_median"]) < 0.05, scores


def test_sync_metric_real_vs_shifted_and_shuffled(data_dir):
    rows, offsets = av_sync_validation.validate(cfg(data_dir, sound=True), 0, 4, seed=0)
    by = {r["variant"]: r for r in rows}
    real = by["real"]
    assert real["f1"] >= 0.75 and real["within_half"] >= 0.75 and abs(real["offset_median"]) < 0.1
    for name in ("shift+1", "shift+2", "shift+4", "shuffled"):
        assert by[name]["f1"] < 0.5 * real["f1"], (name, by[name])
        assert by[name]["within_half"] < 0.5 * real["within_half"], (name, by[name])
    # The offset distribution moves by the shift (a longer shift lands nearer other impacts).
    assert abs(np.median(offsets["shift+1"]) - 1) < 0.3 and abs(np.median(offsets["real"])) < 0.1
    # Audio statistics: a real track is closer to the real tracks than noise is.
    assert by["noise"]["w1_centroid_hz"] > 5 * by["real"]["w1_centroid_hz"]
    md = av_sync_validation.markdown(rows, "# t")
    assert md.count("\n| ") == len(rows) + 1


def test_mp4_with_sound_has_audio_stream(tmp_path, clips):
    sound, _ = clips
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with_audio = video_io.write_mp4(
        tmp_path / "a.mp4", sound["video"][0], fps=bss.FPS, audio=sound["audio"][0]
    )
    plain = video_io.write_mp4(tmp_path / "b.mp4", sound["video"][0], fps=bss.FPS)
    grid = video_io.write_video_grid_mp4(
        tmp_path / "g.mp4", sound["video"][:2], fps=bss.FPS, audio=sound["audio"][0]
    )

    def probe(path):
        return subprocess.run([ffmpeg, "-i", str(path)], capture_output=True, text=True).stderr

    for path in (with_audio, grid):
        info = probe(path)
        assert "Audio:" in info and "Video:" in info and "Duration: 00:00:04.0" in info, info
    assert "Audio:" not in probe(plain)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4", "g.mp4"]


def test_sound_refused_without_sound_builder(data_dir):
    with pytest.raises(ConfigError, match="has no sound"):
        loading.get_builder(dict(cfg(data_dir, sound=True), name="moving_digits"))


def test_log_mel_round_trip_quality(clips):
    sound, _ = clips
    audio = sound["audio"][:2].astype(np.float64)
    mel_cfg = audio_frontend.MelConfig()
    mel = audio_frontend.encode(audio, mel_cfg)
    frames_per_video_frame = bss.SAMPLES_PER_FRAME // mel_cfg.hop
    assert mel.shape == (2, SIZES["frames"] * frames_per_video_frame, mel_cfg.n_mels)
    recon = audio_frontend.decode(mel, audio.shape[-1], mel_cfg, iters=16)
    q = audio_repr.roundtrip_quality(audio, recon, bss.SAMPLE_RATE, bss.FPS)
    # Floors (measured 0.10-0.13 / 1.0 / < 0.05 frame on these tracks with 16-64 iterations).
    assert q["spectral_convergence"] < 0.25, q
    assert q["onset_f1"] >= 0.9 and q["onset_error"] < 0.1, q
