"""`--condition=frames` for the latent DiT: a latent_dit stage (configs/latent_dit.py) or the
single-stage runner (configs/single_stage.py) continues real test clips (or a video file) and
is scored like a keyframe stage (`cascade.evaluation.continuation`).

  request = check_latent_request(config, mode="sample", given_frames=1, target_frames=9)
  result = write_latent_continuations(trained_dit, workdir / "samples", "latent_dit_continuation",
                                      request, num=4)

Frame counts are video frames, as the user sees them. The causal VAE maps 1 + f k video
frames to 1 + k latent frames (f: its temporal factor, 4 for the shipped configs), so
--given_frames, --target_frames and --overlap must each be 1 + f k; they become 1 + k latent
frames, and the DiT extends the latent clip window by window (`conditional.extend_video`:
replacement of the given latent frames on the flow path; VDM reconstruction guidance is built
for the Gaussian U-Net stages only). f lives in the VAE's checkpoint, so the counts are checked
once the DiT is loaded (`LatentRequest.resolve`); the rest is refused before anything loads.

The decoded clip keeps the given frames up to the VAE's reconstruction error (the given latents
are kept exactly and the decoder is causal); the metrics JSON reports that error as
`given_frames_psnr` beside the per-offset PSNR / SSIM of the generated frames.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from cascade.configs import ConfigError
from cascade.data import pipeline
from cascade.evaluation import continuation_quality
from cascade.evaluation import frames as frame_metrics
from cascade.evaluation.continuation import (
    Request,
    Result,
    check_given,
    offset_metrics,
    print_summary,
    real_view,
    request_report,
    write_marked_videos,
    write_report,
)
from cascade.sampling import conditional
from cascade.training.trained import TrainedStage

LATENT_CONFIGS = ("latent_dit", "single_stage")
METHOD = "replacement"  # the one method the flow DiT has (`LatentDiTStage.conditioning_methods`)
# (first video [B, g, H, W, C], latent target, latent overlap, key, labels) -> video [B, F, ...]
Extend = Callable[[np.ndarray, int, int, jax.Array, np.ndarray | None], np.ndarray]


@dataclasses.dataclass(frozen=True)
class LatentPlan:
    """A resolved request: the same numbers in video frames and in latent frames."""

    video: Request  # counts in video frames: what the flags say and the report shows
    latent: Request  # counts in latent frames: what the DiT runs (`conditional.extend`)
    factor: int  # the VAE's temporal factor f: latent frame k >= 1 covers f video frames
    window: int  # the DiT's window in video frames (1 + f (latent window - 1))


@dataclasses.dataclass(frozen=True)
class LatentRequest:
    """`--condition=frames` for a latent DiT, counts in video frames as typed (None: default).
    What needs the VAE's temporal factor is checked by `resolve` once the DiT is loaded."""

    given_frames: int | None = None
    target_frames: int | None = None
    overlap: int | None = None

    def resolve(self, stage: Any, available: int) -> LatentPlan:
        """The plan for a loaded `LatentDiTStage` whose clips hold `available` true frames;
        ConfigError naming the flag and the valid numbers. Defaults: half the DiT's latent
        window given, target = the window, overlap = given_frames."""
        window, latent_window = stage.pixel_shape[0], stage.output_shape[0]
        if latent_window < 2:
            raise ConfigError(
                f"--condition=frames: the latent DiT's window is one latent frame ({window} "
                "video frames), which leaves no frame to generate beside a given one."
            )
        f = (window - 1) // (latent_window - 1)  # exact: the VAE checked 1 + f k at load

        def latent(frames: int, flag: str) -> int:
            if frames < 1 or (frames - 1) % f:
                valid = ", ".join(str(1 + f * k) for k in range(4))
                raise ConfigError(
                    f"--{flag}={frames}: the causal VAE maps 1 + {f}k video frames to 1 + k "
                    f"latent frames (temporal factor {f}), so {flag} must be one of {valid}, ..."
                )
            return 1 + (frames - 1) // f

        half = max(1, latent_window // 2)  # the default: half the latent window given
        g = 1 + f * (half - 1) if self.given_frames is None else int(self.given_frames)
        c = latent(g, "given_frames")
        if c >= latent_window:
            raise ConfigError(
                f"--given_frames={g}: the latent DiT's window is {window} video frames "
                f"({latent_window} latent frames), so given_frames < {window}: one of "
                + ", ".join(str(1 + f * k) for k in range(latent_window - 1))
                + " (at least one latent frame to generate)."
            )
        if g > available:
            raise ConfigError(f"--given_frames={g}: the clips hold only {available} frames.")
        target = window if self.target_frames is None else int(self.target_frames)
        t = latent(target, "target_frames")
        overlap = g if self.overlap is None else int(self.overlap)
        o = latent(overlap, "overlap")
        if o > c:
            raise ConfigError(
                f"--overlap={overlap} is more than --given_frames={g}: the first window is "
                "conditioned on the given frames only."
            )
        step = latent_window - o  # latent frames each window adds
        if t < c or (t - c) % step:
            low = g + max(t - c, 0) // step * step * f
            raise ConfigError(
                f"--target_frames={target} cannot be reached from --given_frames={g}: each "
                f"window of {window} video frames conditioned on --overlap={overlap} adds "
                f"{step * f}, so reachable lengths are {g} + k*{step * f} (nearest: {low} or "
                f"{low + step * f})."
            )
        if t == c:
            raise ConfigError(
                f"--target_frames={target} equals --given_frames={g}: nothing to generate."
            )
        windows = (t - c) // step
        return LatentPlan(
            Request(METHOD, 0.0, g, target, overlap, windows),
            Request(METHOD, 0.0, c, t, o, windows),
            f,
            window,
        )


def check_latent_request(
    config: ml_collections.ConfigDict,
    *,
    mode: str,
    method: str | None = None,
    w_r: float | None = None,
    given_frames: int | None = None,
    target_frames: int | None = None,
    overlap: int | None = None,
) -> LatentRequest:
    """What can be checked of a latent_dit / single_stage request before anything is loaded
    (ConfigError naming the flag); method None means replacement, the only one here."""
    if config.stage not in LATENT_CONFIGS:
        raise ConfigError(f"check_latent_request is for {' / '.join(LATENT_CONFIGS)} configs.")
    if mode == "train":
        raise ConfigError("--condition=frames is for --mode=sample or --mode=evaluate.")
    method = METHOD if method is None else method
    if method not in conditional.METHODS:
        raise ConfigError(f"--method={method}: use one of {'|'.join(conditional.METHODS)}.")
    if method != METHOD:
        raise ConfigError(
            f"--method={method}: the latent DiT is a flow-matching model whose given frames are "
            "kept by replacement of their latent frames; --method=replacement (the default "
            "here) is the method. Reconstruction guidance is built for the Gaussian U-Net "
            "stages (configs/keyframes.py, configs/cascade.py)."
        )
    if w_r not in (None, 0.0):
        raise ConfigError(
            f"--w_r={w_r} would be ignored: the latent DiT extends by replacement, which has no "
            "guidance weight; drop --w_r."
        )
    counts = {"given_frames": given_frames, "target_frames": target_frames, "overlap": overlap}
    for flag, n in counts.items():
        if n is not None and n < 1:
            raise ConfigError(f"--{flag}={n} must be >= 1.")
    if overlap is not None and given_frames is not None and overlap > given_frames:
        raise ConfigError(
            f"--overlap={overlap} is more than --given_frames={given_frames}: the first window "
            "is conditioned on the given frames only."
        )
    if config.stage == "latent_dit" and given_frames is not None:  # its view is known here
        window = config.view.frames
        if given_frames >= window:
            raise ConfigError(
                f"--given_frames={given_frames}: the latent DiT's window is {window} video "
                f"frames (config.view.frames), so given_frames < {window} (at least one latent "
                "frame to generate)."
            )
    return LatentRequest(given_frames, target_frames, overlap)


def write_latent_continuations(
    dit: TrainedStage,
    out_dir: str | Path,
    name: str,
    request: LatentRequest,
    num: int,
    *,
    seed: int | None = None,
    video_path: str | None = None,
    quality: bool = False,
    extend: Extend | None = None,
    extra: dict[str, Any] | None = None,
) -> Result:
    """Continue the first `num` test clips (or the clips of `video_path`) with a trained latent
    DiT as `request` says (one batch); write out_dir/<name>.{gif,mp4,_grid.png} (given frames
    framed green, generated red), <name>_real.*, <name>_vs_real.* and <name>_metrics.json
    (per-offset PSNR / SSIM, `given_frames_psnr`; with `quality`, --mode=evaluate, the content
    metrics and window FVD of `continuation_quality`). `extend` replaces
    `conditional.extend_video` (the single-stage runner's `extend`); `extra` joins the report.
    Returns the videos [N, target_frames, H, W, C] in [-1, 1], the true clips and the report."""
    config, stage = dit.config, dit.stage
    seed = config.seed if seed is None else seed
    if video_path:
        real = conditional.read_condition_video(video_path, tuple(stage.pixel_shape[1:]))[:num]
        labels = None
        available = real.shape[1]
    else:
        clips = pipeline.test_clips(config.data, num)
        labels = clips["label"] if config.model.num_classes > 0 else None
        available = config.data.frames // config.view.frame_stride
    plan = request.resolve(stage, available)
    g, target = plan.video.given_frames, plan.video.target_frames
    if not video_path:
        real = real_view(clips["video"], config, target, seed)
    real = real[:, :target]
    check_given(real, g, video_path)
    if extend is None:

        def extend(first, latent_target, latent_overlap, key, labels):
            video, _ = conditional.extend_video(
                dit, first, latent_target, overlap=latent_overlap, key=key, labels=labels
            )
            return video

    start = time.perf_counter()
    video = extend(
        real[:, :g], plan.latent.target_frames, plan.latent.overlap, jax.random.key(seed), labels
    )
    seconds = time.perf_counter() - start
    out_dir = Path(out_dir)
    path = write_marked_videos(
        out_dir, name, video, real, conditional.given_frames_mask(target, first=g)
    )
    report = {
        "stage": stage.name,
        "workdir": str(dit.workdir),
        **(extra or {}),
        **request_report(plan.video, len(real), real, video_path),
        "window": plan.window,
        "latent": {
            "temporal_factor": plan.factor,
            "window": int(stage.output_shape[0]),
            "given_frames": plan.latent.given_frames,
            "target_frames": plan.latent.target_frames,
            "overlap": plan.latent.overlap,
        },
        "sample_steps": int(config.sample.steps),
        "seconds": seconds,
        "given_frames_psnr": given_psnr(video[:, :g], real[:, :g]),
        **offset_metrics(video, real, g),
    }
    if quality:
        report["quality"] = continuation_quality.extension_quality(
            video, real, data_name=config.data.name, labels=labels, fvd_videos=len(real)
        )
    write_report(out_dir, name, report)
    source = f"clips of {video_path}" if video_path else "test clips"
    print_summary(source, len(real), plan.video, seconds, path, report)
    return Result(video, real, report, path)


def given_psnr(kept: np.ndarray, given: np.ndarray) -> float | None:
    """Mean PSNR (dB) of the given frames as the output holds them [N,g,H,W,C] vs as given, both
    in [-1, 1]: the VAE's reconstruction error of the given frames (None where identical)."""
    to01 = lambda x: np.clip((np.asarray(x, np.float32) + 1.0) / 2.0, 0.0, 1.0)  # noqa: E731
    value = float(np.mean(frame_metrics.psnr(to01(kept), to01(given), data_range=1.0)))
    return value if math.isfinite(value) else None


def write_runner_latent_continuations(
    runner: Any,
    workdir: str | Path,
    request: LatentRequest,
    num: int,
    *,
    video_path: str | None = None,
    quality: bool = False,
) -> Result:
    """configs/single_stage.py with --condition=frames: `write_latent_continuations` through
    `SingleStageRunner.extend` (the runner's sampler settings), written as
    workdir/single_stage_continuation*."""

    def extend(first, latent_target, latent_overlap, key, labels):
        outputs, _ = runner.extend(
            first, latent_target, overlap=latent_overlap, key=key, method=METHOD, labels=labels
        )
        return outputs["video_vae"]

    return write_latent_continuations(
        runner.dit,
        workdir,
        "single_stage_continuation",
        request,
        num,
        seed=runner.config.seed,
        video_path=video_path,
        quality=quality,
        extend=extend,
        extra={"runner": "single_stage", "sampler": runner.config.dit.sampler},
    )
