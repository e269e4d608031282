"""`--mode=evaluate`: sample videos, measure them against the test split, write a metrics JSON.

One function per thing evaluated: a trained stage, a super-resolution stage given ground-truth
inputs (against its trivial baseline), and a runner's final videos (cascade or single stage).
Every result carries the FVD protocol it was measured with.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from cascade import json_io, video_io
from cascade.data import pipeline, views
from cascade.evaluation import aggregate, cost, digits, frames, physics
from cascade.evaluation.fvd import FeatureCache, FVDProtocol, compute_fvd
from cascade.stages.stage import merge_model, sampling_fn
from cascade.training import parallel
from cascade.training.metrics_log import log_evaluation
from cascade.training.train_state import count_params

MIN_I3D_FRAMES = 9  # the Kinetics I3D head needs at least 9 frames


def real_videos(config: ml_collections.ConfigDict, num: int, split: str = "test") -> np.ndarray:
    """Real clips [num, T, H, W, C] seen the way a stage's output is: its view (frames, stride,
    resolution). Clip i is `pipeline.test_clips(...)[i]`, whose label sample i was conditioned
    on (split="test"); the split is the FVD protocol's `real_split`."""
    clips = pipeline.test_clips(config.data, num, split=split)
    return views.clip_view(clips["video"], config.view, config.data, np.random.default_rng(0))


def fvd_metrics(
    real: np.ndarray,
    fake: np.ndarray,
    max_videos: int | None = None,
    *,
    real_split: str = "test",
    cache: FeatureCache | None = None,
) -> dict[str, Any]:
    """FVD and KVD of `fake` against `real` with the pinned protocol (clip = all frames, <= 16).

    Uses the first min(len(real), len(fake), max_videos) videos of each side (max_videos
    None: no cap); dict(fvd=None, reason=...) when that is under 2 or the clips are too
    short for I3D. `real_split` names the split `real` was read from; it is recorded in
    the protocol. `cache` keeps I3D compiled and the real features across calls."""
    frames_available = min(real.shape[1], fake.shape[1])
    if frames_available < MIN_I3D_FRAMES:
        return {
            "fvd": None,
            "reason": f"{frames_available}-frame clips are shorter than the "
            f"{MIN_I3D_FRAMES} frames the Kinetics I3D needs",
        }
    n = min(len(real), len(fake), len(real) if max_videos is None else max_videos)
    if n < 2:  # a covariance needs 2 videos per side
        return {"fvd": None, "reason": f"FVD off: {n} videos per side (needs >= 2)"}
    protocol = FVDProtocol(
        num_videos=n,
        clip_length=min(16, frames_available),
        batch_size=min(8, n),
        real_split=real_split,
    )
    # I3D batches split over every device when they divide evenly (one mesh axis).
    devices = parallel.default_devices()
    sharding = None
    if len(devices) > 1 and protocol.batch_size % len(devices) == 0:
        mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    return compute_fvd(real[:n], fake[:n], protocol, sharding=sharding, cache=cache)


def content_metrics(
    videos: np.ndarray, data_name: str, labels: np.ndarray | None
) -> dict[str, Any]:
    """Physical plausibility (bouncing_shapes) or digit identity/motion (moving_digits)."""
    if data_name == "bouncing_shapes":
        return {"physics": aggregate.summarize(physics.physics_metrics(videos))}
    if data_name == "moving_digits":
        return {"digits": aggregate.summarize(digits.digit_metrics(videos, labels))}
    return {}


SSIM_MIN_SIZE = 11  # the 11 x 11 Gaussian window of SSIM


def _frame_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float | None]:
    """Mean PSNR (per frame, capped at `frames.UINT8_PSNR_CEILING`: a baseline that copies
    a static clip exactly must not outrank every model at +inf) and SSIM; SSIM is None for
    frames smaller than its window."""
    pred, target = jax.numpy.asarray(pred), jax.numpy.asarray(target)
    if min(target.shape[2:4]) < SSIM_MIN_SIZE:
        psnr, ssim = frames.psnr(pred, target), None
    else:
        scores = frames.frame_metrics(pred, target)
        psnr, ssim = scores["psnr_frame"], float(scores["ssim"])
    return {"psnr": float(np.minimum(psnr, frames.UINT8_PSNR_CEILING).mean()), "ssim": ssim}


def evaluate_super_resolution(trained: Any, num: int, seed: int = 0) -> dict[str, Any] | None:
    """An SR stage given ground-truth low-res input on held-out clips, against trivial baselines.

    Spatial: bilinear upsampling. Temporal: frame repetition and linear interpolation, scored
    on the in-between frames only. PSNR/SSIM are per-frame values averaged over frames and clips.
    `content`: the data set's content metrics (`content_metrics`: digit identity and label
    match, or physics) of the whole clips of the model, each baseline and the target, because
    pixel error alone can hide what a viewer sees: a temporal SR stage can beat linear
    interpolation in PSNR while its in-between digits are read as other digits.
    None for a stage without trivial baselines (`Stage.trivial_baselines`).
    """
    stage = trained.stage
    clips = pipeline.test_clips(trained.config.data, num)
    target = views.clip_view(
        clips["video"], trained.config.view, trained.config.data, np.random.default_rng(seed)
    )
    task = stage.trivial_baselines(target)
    if task is None:  # not a super-resolution stage
        return None
    cond, baselines, keep = task
    samples = trained.sample({"label": clips["label"], "cond": cond}, jax.random.key(seed))
    read = functools.partial(
        content_metrics, data_name=trained.config.data.name, labels=np.asarray(clips["label"])
    )
    content = {
        "model": read(np.asarray(samples)),
        "baselines": {k: read(np.asarray(b)) for k, b in baselines.items()},
        "target": read(np.asarray(target)),
    }
    target, samples = target[:, keep], samples[:, keep]
    baselines = {name: b[:, keep] for name, b in baselines.items()}
    model = _frame_scores(samples, target)
    base = {name: _frame_scores(b, target) for name, b in baselines.items()}
    best = max(base.values(), key=lambda s: s["psnr"])
    return {
        "num_clips": num,
        "model": model,
        "baselines": base,
        "content": content,
        "beats_best_baseline": {
            "psnr": model["psnr"] > best["psnr"],
            "ssim": None
            if model["ssim"] is None
            else model["ssim"] > max(s["ssim"] for s in base.values()),
        },
    }


def reconstruction_metrics(recon: np.ndarray, clips: np.ndarray) -> dict[str, float]:
    """PSNR/SSIM of VAE reconstructions, next to the trivial all-background prediction."""
    background = np.full_like(clips, float(np.median(clips)))
    return {**_frame_scores(recon, clips), "background_baseline": _frame_scores(background, clips)}


def stage_sampler(trained: Any):
    """(params, cond, key) -> outputs: one trained stage's whole sampling loop, for FLOP counting."""
    return sampling_fn(trained.stage, trained.graphdef)


def sampling_flops(trained: Any, cond: dict[str, np.ndarray]) -> dict[str, float]:
    """XLA-counted FLOPs of one sampler call (loops counted by trip count), per video."""
    counted = cost.sampling_cost(
        stage_sampler(trained),
        (trained.params, cond, jax.random.key(0)),
        num_videos=len(cond["label"]),
        time_it=False,
    )
    return {"flops_per_video": counted["flops_per_video"]}


def runner_sampling_flops(
    runner: Any, labels: np.ndarray, outputs: dict[str, np.ndarray]
) -> dict[str, Any]:
    """XLA-counted sampling FLOPs per video of a runner: every stage of a cascade (each given
    the previous stage's `outputs` as conditioning), or the latent DiT plus the VAE decode.

    Counted on one batch (at most `runner.config.batch_size` videos); returns
    `cost.pipeline_sampling_cost`'s dict: flops_per_video (the sum) and per-stage costs.
    """
    b = min(len(labels), runner.config.batch_size)
    key = jax.random.key(0)
    if runner.config.stage == "cascade":
        chain, prev = [], None
        for name, trained in runner.stages:
            cond = {"label": labels[:b]} if prev is None else {"label": labels[:b], "cond": prev}
            chain.append((name, stage_sampler(trained), (trained.params, cond, key)))
            prev = outputs[name][:b]
    else:
        dit = runner.dit
        vae = dit.stage.vae
        latents = jax.ShapeDtypeStruct((b, *dit.stage.output_shape), np.float32)
        chain = [
            ("latent_dit", stage_sampler(dit), (dit.params, {"label": labels[:b]}, key)),
            (
                "vae_decode",
                lambda p, z: merge_model(vae.graphdef, p).decode(z),
                (vae.params, latents),
            ),
        ]
    return cost.pipeline_sampling_cost(chain, num_videos=b, time_it=False)


def evaluate_outputs(
    outputs: dict[str, np.ndarray],
    final_config: ml_collections.ConfigDict,
    labels: np.ndarray,
    max_fvd_videos: int | None = None,
) -> dict[str, Any]:
    """FVD/KVD and content metrics of a runner's final videos against real test clips."""
    final = list(outputs.values())[-1]
    real = real_videos(final_config, len(final))
    result = {"fvd": fvd_metrics(real, final, max_fvd_videos)}
    result.update(content_metrics(final, final_config.data.name, labels))
    result["real_reference"] = content_metrics(real, final_config.data.name, labels)
    return result


def evaluate_stage(trained: Any, workdir: str | Path, num: int | None = None) -> dict[str, Any]:
    """`--mode=evaluate` for one trained stage: sample, measure, write workdir/eval/metrics.json."""
    config = trained.config
    num = num or config.train.num_samples
    cond = trained.sampler.test_conditioning(config, num)
    start = time.perf_counter()
    videos = trained.stage.to_video(trained.sample(cond, jax.random.key(config.seed)))
    seconds = time.perf_counter() - start
    real = real_videos(config, num)
    result: dict[str, Any] = {
        "stage": trained.stage.name,
        "step": trained.step,
        "num_videos": num,
        "params": count_params(trained.params),
        "sampling_seconds_including_compile": seconds,
        "fvd": fvd_metrics(real, videos),
    }
    result.update(content_metrics(videos, config.data.name, cond.get("label")))
    super_resolution = evaluate_super_resolution(trained, num)  # None: no trivial baselines
    if super_resolution is not None:
        result["super_resolution"] = super_resolution
    if trained.stage.name == "video_vae":  # its "samples" are reconstructions of test clips
        result["reconstruction"] = reconstruction_metrics(videos, cond["cond"])
    result["sampling_cost"] = sampling_flops(trained, cond)
    result["config"] = json.loads(config.to_json_best_effort())
    return write_metrics(result, Path(workdir) / "eval")


def evaluate_runner(
    runner: Any, config: ml_collections.ConfigDict, workdir: str | Path, num: int | None = None
) -> dict[str, Any]:
    """`--mode=evaluate` for a cascade or single-stage config."""
    num = num or config.num_samples
    outputs, seconds = runner.sample_many(num)
    video_io.write_run_outputs(workdir, outputs, seconds, config.fps)
    labels = runner.labels(num)  # the labels sample_many conditioned on
    result = evaluate_outputs(outputs, runner.final_config, labels)
    flops = runner_sampling_flops(runner, labels, outputs)
    result.update(
        runner=config.stage,
        num_videos=num,
        seconds=seconds,
        params=runner.params(),
        sampling_cost={
            "flops_per_video": flops["flops_per_video"],
            "flops_per_video_by_stage": {
                name: s["flops_per_video"] for name, s in flops["stages"].items()
            },
        },
        config=json.loads(config.to_json_best_effort()),
    )
    return write_metrics(result, Path(workdir))


def write_metrics(result: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """out_dir/metrics.json and a printed table, from process 0 (every host has the same)."""
    if jax.process_index() != 0:
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    json_io.write_json(path, result)
    log_evaluation(out_dir, result, int(result.get("step", 0)))  # TensorBoard: eval/...
    print(format_table(result))
    print(f"Metrics written to {path}")
    return result


def format_table(result: dict[str, Any], prefix: str = "") -> str:
    """The scalar leaves of a result as an aligned two-column table (protocol/config omitted)."""
    rows: list[tuple[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in ("protocol", "config"):
                    walk(value, f"{path}.{key}" if path else key)
        elif (
            isinstance(node, (int, float, bool, np.floating, np.integer, np.bool_)) or node is None
        ):
            rows.append(
                (path, f"{node:.4g}" if isinstance(node, (float, np.floating)) else str(node))
            )

    walk(result, prefix)
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
