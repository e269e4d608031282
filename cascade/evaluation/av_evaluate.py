"""`--mode=evaluate` for the joint audio-video stage (`cascade.stages.av_dit`, any `av.mode`).

Samples N clips with their sound (conditioned on the labels of the first N test clips), writes
them as MP4 with an audio stream (`samples/av_dit_final_<i>.mp4`), and measures against the
same N real test windows (same frames, resolution and sound; clip i <-> sample i):
  sync                 `av_sync.sync_scores`: generated audio onsets vs impacts seen in the
                       generated video (both detectors read only the generated clip)
  audio_statistics     `av_sync.statistics_distance` of the generated tracks vs the real ones
                       (1-D Wasserstein of loudness, spectral centroid, onset rate)
  fvd, physics         as for any stage (`evaluate.fvd_metrics`, `evaluate.content_metrics`);
                       FVD is None, with its reason, for clips under 9 frames or N < 2
  real_reference       sync and physics of the real windows themselves (the ceiling)
  roundtrip_reference  the real video with its real sound passed through the log-mel front end
                       and Griffin-Lim (what the audio representation alone costs): sync and
                       audio statistics against the real tracks
Writes workdir/eval/metrics.json (`evaluate.write_metrics`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cascade.data import pipeline
from cascade.data.builders import bouncing_shapes_sound as sound
from cascade.evaluation import av_sync
from cascade.evaluation.evaluate import content_metrics, fvd_metrics, sampling_flops, write_metrics
from cascade.evaluation.fvd import FeatureCache
from cascade.sampling.runners import write_av_samples
from cascade.training.train_state import count_params


def real_windows(trained: Any, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `num` test clips as the stage sees them: video [num, T, r, r, 3] in [-1, 1],
    sound [num, T * samples_per_frame] float32, labels [num]. The windows are drawn like
    `Sampler.test_conditioning`'s batch (rng [seed, 1]), so sample i's label is clip i's."""
    config = trained.config
    clips = pipeline.test_clips(config.data, num)
    stored, frames = clips["video"].shape[1], config.view.frames
    rng = np.random.default_rng([config.seed, 1])
    start = rng.integers(0, stored - frames + 1, size=num)
    video, audio = trained.stage.clip_windows(clips, start)
    return video, audio, np.asarray(clips["label"], np.int32)


def sync(videos: np.ndarray, audio: np.ndarray) -> dict[str, float]:
    """`av_sync.sync_scores` of clips [B, T, H, W, 3] in [-1, 1] with tracks [B, S]."""
    onsets = [av_sync.detect_onsets(a, sound.SAMPLE_RATE, sound.FPS) for a in audio]
    impacts = [av_sync.detect_impacts(v) for v in videos]
    return av_sync.sync_scores(onsets, impacts)


def audio_distance(audio: np.ndarray, real_audio: np.ndarray) -> dict[str, float]:
    """1-D Wasserstein distances of the audio statistics of tracks [B, S] vs real [N, S]."""
    stats = [
        av_sync.audio_statistics(a, sound.SAMPLE_RATE, sound.SAMPLES_PER_FRAME)
        for a in (audio, real_audio)
    ]
    return av_sync.statistics_distance(*stats)


def av_metrics(
    stage: Any,
    videos: np.ndarray,
    audio: np.ndarray,
    real_video: np.ndarray,
    real_audio: np.ndarray,
    labels: np.ndarray | None,
    *,
    fvd_videos: int | None = None,
    cache: FeatureCache | None = None,
) -> dict[str, Any]:
    """Every metric of the module docstring for generated clips [B, T, H, W, 3] and tracks
    [B, S] against real ones of the same shapes (`stage`: the av_dit stage, for the front
    end of the round-trip reference)."""
    roundtrip = stage.to_audio(stage.pack(real_video, stage.audio_features(real_audio)))
    result: dict[str, Any] = {
        "sync": sync(videos, audio),
        "audio_statistics": audio_distance(audio, real_audio),
        "fvd": fvd_metrics(real_video, videos, fvd_videos, cache=cache),
    }
    result.update(content_metrics(videos, "bouncing_shapes", labels))
    result["real_reference"] = {
        "sync": sync(real_video, real_audio),
        **content_metrics(real_video, "bouncing_shapes", labels),
    }
    result["roundtrip_reference"] = {
        "sync": sync(real_video, roundtrip),
        "audio_statistics": audio_distance(roundtrip, real_audio),
    }
    return result


def network_evaluations(config: Any, steps: int | None = None) -> int:
    """Network evaluations per sample: steps per pass (x2 for Heun), x(1 + guided modalities)
    for classifier-free guidance, x2 passes for a two-stage mode."""
    s = config.sample
    per_step = (2 if s.sampler == "heun" else 1) * (
        1 + int(s.video_guidance > 0) + int(s.audio_guidance > 0)
    )
    passes = 1 if config.av.mode == "joint" else 2
    return (steps or s.steps) * per_step * passes


def evaluate_av(
    trained: Any,
    workdir: str | Path,
    num: int | None = None,
    *,
    fvd_videos: int | None = None,
    cache: FeatureCache | None = None,
    flops: bool = True,
) -> dict[str, Any]:
    """Sample `num` clips (default config.train.num_samples), write their MP4s with sound and
    workdir/eval/metrics.json; returns the metrics (module docstring). `flops`: also count the
    sampler's FLOPs per video with XLA (one more compile)."""
    config, stage = trained.config, trained.stage
    num = num or config.train.num_samples
    cond = trained.sampler.test_conditioning(config, num)
    start = time.perf_counter()
    outputs = trained.sample(cond, jax.random.key(config.seed))
    seconds = time.perf_counter() - start
    videos, audio = stage.to_video(outputs), stage.to_audio(outputs)
    write_av_samples(trained, workdir, num, outputs=outputs)
    real_video, real_audio, labels = real_windows(trained, num)
    labels = labels if config.model.num_classes > 0 else None
    result: dict[str, Any] = {
        "stage": stage.name,
        "av_mode": config.av.mode,
        "step": trained.step,
        "num_videos": num,
        "params": count_params(trained.params),
        "sampling_seconds_including_compile": seconds,
        "network_evaluations_per_sample": network_evaluations(config),
    }
    result.update(
        av_metrics(
            stage, videos, audio, real_video, real_audio, labels, fvd_videos=fvd_videos, cache=cache
        )
    )
    if flops:
        result["sampling_cost"] = sampling_flops(trained, cond)
    result["config"] = json.loads(config.to_json_best_effort())
    return write_metrics(result, Path(workdir) / "eval")
