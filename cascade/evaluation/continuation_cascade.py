"""`--condition=frames` on configs/cascade.py: the keyframe stage extends the given frames, the
super-resolution stages follow window by window (`CascadeRunner.extend`); the videos and the
keyframes' per-offset PSNR / SSIM are written like a stage's (`cascade.evaluation.continuation`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax

from cascade import video_io
from cascade.evaluation import continuation_quality
from cascade.evaluation.continuation import (
    Request,
    Result,
    check_given,
    first_frames_source,
    offset_metrics,
    print_summary,
    request_report,
    write_marked_videos,
    write_report,
)
from cascade.sampling import conditional


def write_runner_continuations(
    runner: Any,
    workdir: str | Path,
    request: Request,
    num: int,
    *,
    video_path: str | None = None,
    quality: bool = False,
) -> Result:
    """The cascade's `--condition=frames`: the keyframes stage extends the first frames of
    the test clips (or of `video_path`) to request.target_frames, the SR stages run window by
    window over the long clip (`CascadeRunner.extend`). Writes workdir/cascade_continuation.*
    (final videos; frames derived from given keyframes green) and keyframes_continuation.*
    with the PSNR / SSIM per frame offset of the keyframes against the true frames. quality
    (--mode=evaluate): also `continuation_quality.extension_quality` of the extended keyframes
    (the view the true clips have) under "quality"."""
    keyframes = runner.keyframes
    config = keyframes.config
    c, target = request.given_frames, request.target_frames
    real, labels = first_frames_source(
        config, keyframes.stage, num, target, runner.config.seed, video_path
    )
    check_given(real, c, video_path)
    start = time.perf_counter()
    outputs, seconds = runner.extend(
        real[:, :c],
        target,
        overlap=request.overlap,
        key=jax.random.key(runner.config.seed),
        method=request.method,
        w_r=request.w_r,
        labels=labels,
    )
    total = time.perf_counter() - start
    out_dir = Path(workdir)
    video = outputs[runner.stages[0][0]]
    path = write_marked_videos(
        out_dir,
        "keyframes_continuation",
        video,
        real,
        conditional.given_frames_mask(target, first=c),
    )
    final = list(outputs.values())[-1]
    per_keyframe = final.shape[1] // target  # final frames per keyframe (temporal SR factor)
    final_mask = conditional.given_frames_mask(final.shape[1], first=c * per_keyframe)
    final_path = video_io.write_videos(
        conditional.mark_given_frames(final, final_mask), out_dir, "cascade_continuation"
    )
    report = {
        "stage": "cascade",
        **request_report(request, len(real), real, video_path),
        "final_shape": list(final.shape[1:]),
        "seconds_per_stage": seconds,
        "keyframes": offset_metrics(video, real, c),
    }
    if quality:
        report["quality"] = continuation_quality.extension_quality(
            video, real, data_name=config.data.name, labels=labels, fvd_videos=len(real)
        )
    write_report(out_dir, "cascade_continuation", report)
    source = f"clips of {video_path}" if video_path else "test clips"
    print_summary(source, len(real), request, total, final_path, report["keyframes"])
    return Result(video, real, report, path)
