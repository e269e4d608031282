"""`--condition=frames`: continue real test clips with one trained keyframe stage and score
the continuation against the true frames (VDM sec. 3.1: frame prediction and extension).

  request = check_request(config, mode="sample", given_frames=2, target_frames=10)
  result = write_continuations(trained, workdir, request, num=4)

The first `given_frames` frames of each of the first `num` test clips (`pipeline.test_clips`,
seen through the stage's view with a fixed rng, as plain sampling sees them) are given; the
stage generates the rest window by window (`conditional.extend`) up to `target_frames`.
workdir/samples gets <stage>_continuation.{gif,mp4,_grid.png} (given frames framed green,
generated ones red), <stage>_continuation_real.* (the true clips, given frames green, the rest
grey), <stage>_continuation_vs_real.* (both side by side) and <stage>_continuation_metrics.json
(PSNR / SSIM of generated vs true frames per frame offset, where the true frame exists).

This sits in the evaluation layer, not in sampling/, because it scores what it samples
(`cascade.evaluation.frames`), and sampling may not import evaluation (`cascade.LAYERS`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from cascade import json_io, video_io
from cascade.configs import ConfigError
from cascade.data import pipeline, views
from cascade.evaluation import continuation_quality
from cascade.evaluation import frames as frame_metrics
from cascade.sampling import conditional
from cascade.training.trained import TrainedStage

CONDITIONS = ("none", "frames")
# Stages that generate from noise with a Gaussian U-Net: the ones `conditional` can drive
# without a low-resolution video of their own.
CONDITIONABLE_STAGES = ("keyframes",)
REAL_COLOR = (128, 128, 128)  # grey: true frames that were not given (the reference)


@dataclasses.dataclass(frozen=True)
class Request:
    """A checked `--condition=frames` request (every number already known to be reachable)."""

    method: str  # "replacement" or "reconstruction"
    w_r: float  # reconstruction guidance weight (0 for replacement)
    given_frames: int  # c: the first c frames of each clip are given
    target_frames: int  # frames of the finished clip (c + k (window - overlap))
    overlap: int  # frames each window is conditioned on
    windows: int  # windows sampled per clip


def check_request(
    config: ml_collections.ConfigDict,
    *,
    mode: str,
    method: str = "reconstruction",
    w_r: float | None = None,
    given_frames: int | None = None,
    target_frames: int | None = None,
    overlap: int | None = None,
) -> Request:
    """The request for `config` (a stage config), or ConfigError naming the flag and the
    numbers. Defaults: given_frames = half the stage's window, target_frames = the window,
    overlap = given_frames, w_r = 2 for reconstruction. Reads nothing from disk."""
    stage = config.stage
    if stage in ("cascade", "single_stage"):
        raise ConfigError(
            f"--condition=frames conditions one trained stage; a {stage} config chains stages. "
            "Pass the keyframe stage's own config and workdir "
            "(--config=configs/keyframes.py --workdir=<its workdir>)."
        )
    if stage not in CONDITIONABLE_STAGES:
        why = {
            "latent_dit": "a latent DiT, whose counts are video frames mapped to latent frames "
            "(1 + 4k -> 1 + k): check its request with cascade.evaluation.continuation_latent."
            "check_latent_request (the command line does)",
            "video_vae": "a video VAE, which does not generate",
            "temporal_sr": "a super-resolution stage, which also needs its low-resolution video",
            "spatial_sr": "a super-resolution stage, which also needs its low-resolution video",
        }.get(stage, f"a {stage} stage")
        raise ConfigError(
            f"--condition=frames needs a keyframe stage (configs/keyframes.py); this config is "
            f"{why}."
        )
    if mode == "train":
        raise ConfigError("--condition=frames is for --mode=sample or --mode=evaluate.")
    if method not in conditional.METHODS:
        raise ConfigError(f"--method={method}: use one of {'|'.join(conditional.METHODS)}.")
    if method == "replacement" and w_r not in (None, 0.0):
        raise ConfigError(
            f"--w_r={w_r} with --method=replacement would be ignored (replacement has no "
            "guidance weight): drop --w_r or use --method=reconstruction."
        )
    w_r = 0.0 if method == "replacement" else (2.0 if w_r is None else float(w_r))
    if not math.isfinite(w_r) or w_r < 0:
        raise ConfigError(f"--w_r={w_r} must be >= 0 (VDM uses w_r > 1; 0 is replacement).")
    window = config.view.frames
    c = max(1, window // 2) if given_frames is None else int(given_frames)
    if not 1 <= c < window:
        raise ConfigError(
            f"--given_frames={c}: the stage's window is {window} frames (config.view.frames), "
            f"so 1 <= given_frames < {window} (at least one frame to generate)."
        )
    available = config.data.frames // config.view.frame_stride
    if c > available:
        raise ConfigError(
            f"--given_frames={c}: the test clips hold only {available} frames at the stage's "
            f"frame_stride={config.view.frame_stride} (config.data.frames={config.data.frames})."
        )
    target = window if target_frames is None else int(target_frames)
    overlap = c if overlap is None else int(overlap)
    if overlap > c:
        raise ConfigError(
            f"--overlap={overlap} is more than --given_frames={c}: the first window is "
            "conditioned on the given frames only."
        )
    try:
        windows = conditional.extension_windows(c, target, window, overlap)
    except ConfigError as err:  # the same numbers, named as the flags the user typed
        text = str(err).replace("target_frames=", "--target_frames=")
        text = text.replace("overlap=", "--overlap=")
        raise ConfigError(text) from None
    if windows == 0:
        raise ConfigError(
            f"--target_frames={target} equals --given_frames={c}: nothing to generate."
        )
    return Request(method, w_r, c, target, overlap, windows)


@dataclasses.dataclass(frozen=True)
class RunnerRequest:
    """`--condition=frames` on a runner config: the flags, checked against the runner's first
    stage (its window, its test clips) once the runner is built (`check`)."""

    mode: str
    method: str
    w_r: float | None
    given_frames: int | None
    target_frames: int | None
    overlap: int | None

    def check(self, first_stage_config: ml_collections.ConfigDict) -> Request:
        """The checked Request for the runner's keyframe stage (ConfigError naming the flag)."""
        return check_request(first_stage_config, **dataclasses.asdict(self))


def check_runner_request(config: ml_collections.ConfigDict, **flags: Any) -> RunnerRequest:
    """The flags of `--condition=frames` for a cascade config, with what can be checked before
    the stages are loaded; ConfigError for the single-stage runner, whose request is
    `continuation_latent.check_latent_request`'s (counts in video frames, 1 + 4k)."""
    if config.stage == "single_stage":
        raise ConfigError(
            "configs/single_stage.py: the latent DiT's request counts video frames mapped to "
            "latent frames; check it with cascade.evaluation.continuation_latent."
            "check_latent_request (the command line does)."
        )
    if flags["mode"] == "train":
        raise ConfigError("--condition=frames is for --mode=sample or --mode=evaluate.")
    return RunnerRequest(**flags)


def real_view(
    clips: np.ndarray, config: ml_collections.ConfigDict, frames: int, seed: int
) -> np.ndarray:
    """The stage's view of stored clips [N,T,H,W,C] stretched to `frames` frames where the
    clips hold them (fewer otherwise): [N, min(frames, T // stride), h, w, C] in [-1, 1].
    The rng is fixed by `seed`, so every run continues the same windows."""
    view = ml_collections.ConfigDict(config.view.to_dict())
    view.frames = min(frames, clips.shape[1] // config.view.frame_stride)
    return np.asarray(views.clip_view(clips, view, config.data, np.random.default_rng([seed, 1])))


def offset_metrics(generated: np.ndarray, real: np.ndarray, given: int) -> dict[str, Any]:
    """PSNR (and SSIM when frames are >= 11 x 11) of generated [N,F,H,W,C] vs real [N,R,...]
    frames in [-1, 1], per generated frame that has a true frame (given <= f < min(F, R)),
    averaged over clips. Infinite or undefined values are written as null."""
    end = min(generated.shape[1], real.shape[1])
    if end <= given:
        return {"frames": [], "reason": "the test clips hold no true frame after the given ones"}
    to01 = lambda x: np.clip((np.asarray(x[:, given:end], np.float32) + 1.0) / 2.0, 0.0, 1.0)  # noqa: E731
    gen, tru = to01(generated), to01(real)
    psnr = np.asarray(frame_metrics.psnr(gen, tru, data_range=1.0)).mean(axis=0)  # [F]
    h, w = gen.shape[2:4]
    ssim = (
        np.asarray(frame_metrics.ssim(gen, tru, data_range=1.0)).mean(axis=0)
        if min(h, w) >= 11
        else None
    )
    rows = [
        {
            "frame": given + i,
            "offset": i + 1,  # 1: the first generated frame
            "psnr": _number(psnr[i]),
            "ssim": None if ssim is None else _number(ssim[i]),
        }
        for i in range(end - given)
    ]
    out: dict[str, Any] = {
        "frames": rows,
        "psnr_mean": _number(psnr.mean()),
        "ssim_mean": None if ssim is None else _number(ssim.mean()),
    }
    if ssim is None:
        out["ssim_reason"] = f"SSIM's 11x11 window needs frames >= 11x11; these are {h}x{w}"
    return out


def _number(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _pad_frames(video: np.ndarray, frames: int) -> np.ndarray:
    """uint8 [N,T,H,W,3] padded with white frames to `frames` (a shorter true clip)."""
    missing = frames - video.shape[1]
    if missing <= 0:
        return video
    return np.pad(video, ((0, 0), (0, missing), (0, 0), (0, 0), (0, 0)), constant_values=255)


@dataclasses.dataclass
class Result:
    video: np.ndarray  # [N, target_frames, H, W, C] in [-1, 1]: given frames + continuation
    real: np.ndarray  # [N, R, H, W, C]: the true clips (R <= target_frames where clips end)
    report: dict[str, Any]  # what <stage>_continuation_metrics.json holds
    path: Path  # <stage>_continuation.gif


def first_frames_source(
    config: ml_collections.ConfigDict,
    stage: Any,
    num: int,
    frames: int,
    seed: int,
    video_path: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(clips [N, R, H, W, C] in [-1, 1] whose first frames are given and whose later frames (if
    any) are the true continuation, labels [N] or None) from the first `num` test clips seen
    through the stage's view (R <= frames), or from a video file (`conditional.
    read_condition_video`: its clips, no labels; ShapeMismatchError for another resolution)."""
    if video_path:
        real = conditional.read_condition_video(video_path, tuple(stage.output_shape[1:]))
        return real[:num, :frames], None
    clips = pipeline.test_clips(config.data, num)
    real = real_view(clips["video"], config, frames, seed)
    conditional.check_frames(stage, real, "the test clips' view")
    return real, (clips["label"] if config.model.num_classes > 0 else None)


def check_given(real: np.ndarray, c: int, video_path: str | None) -> None:
    """ConfigError when the clips [N, R, ...] hold fewer than the c frames to give."""
    if real.shape[1] < c:
        raise ConfigError(
            f"--condition_video={video_path} holds {real.shape[1]} frame(s); --given_frames={c}."
        )


def write_marked_videos(
    out_dir: Path, name: str, video: np.ndarray, real: np.ndarray, mask: np.ndarray
) -> Path:
    """<name>.* (given frames green, generated red), <name>_real.* (given green, the rest
    grey) and <name>_vs_real.* (both side by side) under out_dir; returns <name>.gif."""
    target = video.shape[1]
    marked = conditional.mark_given_frames(video, mask)
    marked_real = conditional.mark_given_frames(
        real, mask[: real.shape[1]], generated_color=REAL_COLOR
    )
    gap = np.full((*marked.shape[:3], 2, 3), 255, np.uint8)  # white column between the two
    both = np.concatenate([marked, gap, _pad_frames(marked_real, target)], axis=3)
    path = video_io.write_videos(marked, out_dir, name)
    video_io.write_videos(marked_real, out_dir, f"{name}_real")
    video_io.write_videos(both, out_dir, f"{name}_vs_real")
    return path


def write_report(out_dir: Path, name: str, report: dict[str, Any]) -> None:
    """out_dir/<name>_metrics.json, written by process 0."""
    if jax.process_index() == 0:  # every host holds the same videos; one writes
        json_io.write_json(out_dir / f"{name}_metrics.json", report)


def print_summary(source: str, num: int, request: Request, seconds: float, path, report) -> None:
    """One line: what was continued, how, where the videos are, the mean PSNR."""
    psnr = report.get("psnr_mean")
    print(
        f"Continued {num} {source} from {request.given_frames} to {request.target_frames} "
        f"frames ({request.method}, w_r={request.w_r}, {request.windows} window(s), "
        f"{seconds:.1f} s including compilation): {path}; PSNR of generated vs true frames "
        + (f"{psnr:.2f} dB" if psnr is not None else "n/a")
    )


def request_report(request: Request, num: int, real: np.ndarray, video_path) -> dict[str, Any]:
    """The request's part of a metrics JSON: source, method, frame counts."""
    return {
        "source": video_path or "test split",
        "method": request.method,
        "w_r": request.w_r,
        "given_frames": request.given_frames,
        "target_frames": request.target_frames,
        "overlap": request.overlap,
        "windows": request.windows,
        "num_clips": int(num),
        "true_frames": int(real.shape[1]),
    }


def write_continuations(
    trained: TrainedStage,
    workdir: str | Path,
    request: Request,
    num: int,
    *,
    seed: int | None = None,
    video_path: str | None = None,
    quality: bool = False,
) -> Result:
    """Continue the first `num` test clips (or the clips of `video_path`) as `request` says
    (one batch), write the videos and the metrics JSON to workdir/samples, print a summary.
    quality (--mode=evaluate): also the content metrics over the whole extended clip and the
    FVD of its 16-frame windows against the true clips' (`continuation_quality`)."""
    config = trained.config
    seed = config.seed if seed is None else seed
    c, target = request.given_frames, request.target_frames
    real, labels = first_frames_source(config, trained.stage, num, target, seed, video_path)
    check_given(real, c, video_path)
    start = time.perf_counter()
    video = conditional.extend(
        trained,
        real[:, :c],
        target,
        overlap=request.overlap,
        key=jax.random.key(seed),
        method=request.method,
        w_r=request.w_r,
        labels=labels,
    )
    seconds = time.perf_counter() - start
    out_dir, name = Path(workdir) / "samples", f"{trained.stage.name}_continuation"
    path = write_marked_videos(
        out_dir, name, video, real, conditional.given_frames_mask(target, first=c)
    )
    report = {
        "stage": trained.stage.name,
        "workdir": str(trained.workdir),
        **request_report(request, len(real), real, video_path),
        "window": int(trained.stage.output_shape[0]),
        "sample_steps": int(config.sample.steps),
        "seconds": seconds,
        **offset_metrics(video, real, c),
    }
    if quality:
        report["quality"] = continuation_quality.extension_quality(
            video, real, data_name=config.data.name, labels=labels, fvd_videos=len(real)
        )
    write_report(out_dir, name, report)
    source = f"clips of {video_path}" if video_path else "test clips"
    print_summary(source, len(real), request, seconds, path, report)
    return Result(video, real, report, path)
