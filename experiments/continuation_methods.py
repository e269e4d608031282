"""Replacement vs VDM reconstruction guidance for frame prediction and 4x extension.

    python -m experiments.continuation_methods --preset=cpu

For moving_digits and bouncing_shapes, a small keyframe stage (window T frames, stride 1) is
trained (or reused: workdirs are named by config hash), then the first c = T/2 frames of
the same test clips are given and each method continues them autoregressively to 4T frames
(windows of T frames, each conditioned on the last c frames so far):

  replacement                 the known part of z_t replaced by a noised copy (VDM sec. 3.1)
  reconstruction, w_r = 1/2/5 the same plus the eq. 7 gradient correction

Frame prediction is the first window of the extension (the same key): generated frames c..T-1
scored against the true ones. The 4x extension is the whole clip: PSNR / SSIM per frame offset
against the true continuation, identity stability and motion residual (moving_digits), the
physics metrics (bouncing_shapes) over the whole clip, and FVD of its 16-frame windows
against real 16-frame windows (`cascade.evaluation.continuation_quality`).

VDM (Ho et al. 2022, table 6) reports, at 16 -> 64 frames on UCF101, FVD 451 for replacement
and 136 for reconstruction guidance. The verdict column says which method came out better
here, or "inconclusive" when the difference is inside the noise: for PSNR, when the paired
per-clip difference is within 2 standard errors; for FVD, when it is smaller than the FVD
between two disjoint halves of the real windows (the sampling noise at this many videos).

Writes experiments/results/continuation_methods/<preset>/results.{md,csv,json} and
error_vs_offset.png, with the commit, the CPU model (lscpu), the seeds and the wall time.
Self-contained on purpose (its own presets; outputs in continuation_methods_report.py): experiments/common.py is used
read-only for training in hash-named workdirs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from experiments import common, tables  # noqa: E402
from experiments.continuation_methods_report import CONTENT, write_outputs  # noqa: E402
from experiments.tables import environment  # noqa: E402

NAME = "continuation_methods"
DATASETS = ("moving_digits", "bouncing_shapes")
METHODS = (
    ("replacement", 0.0),
    ("reconstruction", 1.0),
    ("reconstruction", 2.0),
    ("reconstruction", 5.0),
)
SEED = 0  # training seed of both stages and the sampling key of every method
# Per preset: stored data, the keyframe stage (a configs/keyframes.py preset + overrides),
# clips continued, sampler steps, FVD videos per side (0: off).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {  # for the test: seconds, numbers meaningless
        "data": {"num_train": 8, "num_test": 4, "frames": 16, "resolution": 16},
        "base": "tiny",
        "view": {"frames": 4, "resolution": 8, "frame_stride": 1},
        "model": {},
        "train_steps": 2,
        "batch_size": 8,  # the tiny keyframes batch: the test reuses its cached compile
        "clips": 2,
        "sample_steps": 4,
        "fvd_videos": 0,
    },
    "cpu": {  # ~40 min on a 2-core CPU at load ~15
        "data": {"num_train": 512, "num_test": 16, "frames": 32, "resolution": 16},
        "base": "quick",
        "view": {"frames": 8, "resolution": 16, "frame_stride": 1},
        "model": {"base_channels": 16, "norm_groups": 4, "num_heads": 1},
        "train_steps": 200,
        "batch_size": 8,
        "clips": 16,
        "sample_steps": 32,
        "fvd_videos": 8,
    },
}
EXTENSION = 4  # target = EXTENSION x the window
DEFAULT_OUT = f"experiments/results/{NAME}"


def stage_config(dataset: str, preset: str, data_dir: str | Path):
    """The keyframe stage trained on `dataset` at `preset` (moving_digits: class-conditional
    grey digits; bouncing_shapes: unconditional RGB)."""
    from cascade import config_checks, configs

    p = PRESETS[preset]
    config = configs.load(f"keyframes:{p['base']}")
    config.seed = SEED
    config.data.update(name=dataset, data_dir=str(data_dir), **p["data"])
    config.view.update(**p["view"])
    config.model.update(image_size=p["view"]["resolution"], **p["model"])
    if dataset == "bouncing_shapes":
        config.view.channels = 3
        config.model.update(in_channels=3, out_channels=3, num_classes=0)
        config.diffusion.label_dropout = 0.0  # unconditional: no labels to drop
    config.sample.steps = p["sample_steps"]
    config.train.num_samples = 0
    config.train.batch_size = p["batch_size"]
    common.set_steps(config, p["train_steps"])
    return config_checks.validate(config)


def per_clip_psnr(video: np.ndarray, real: np.ndarray, start: int, end: int) -> np.ndarray:
    """PSNR [N, end - start] (dB) of frames start..end-1 of video vs real, both in [-1, 1]."""
    from cascade.evaluation import frames

    to01 = lambda x: np.clip((np.asarray(x[:, start:end], np.float32) + 1) / 2, 0, 1)  # noqa: E731
    return np.asarray(frames.psnr(to01(video), to01(real), data_range=1.0))


def continue_clips(trained, real: np.ndarray, labels, method: str, w_r: float, p: dict) -> Any:
    """The 4x extension of real[:, :c] (c = window / 2) with one method, and its seconds."""
    import jax

    from cascade.sampling import conditional

    window = trained.stage.output_shape[0]
    c = window // 2
    start = time.perf_counter()
    video = conditional.extend(
        trained,
        real[:, :c],
        EXTENSION * window,
        overlap=c,
        key=jax.random.key(SEED),
        method=method,
        w_r=w_r,
        labels=labels,
        steps=p["sample_steps"],
    )
    return video, time.perf_counter() - start


def run_dataset(dataset: str, preset: str, data_dir, workdirs, fvd_cache) -> dict[str, Any]:
    """Train (or reuse) the stage on `dataset`, continue the test clips with every method."""
    from cascade.data import pipeline
    from cascade.evaluation import continuation, continuation_quality, fvd
    from cascade.training.trained import load_trained

    p = PRESETS[preset]
    config = stage_config(dataset, preset, data_dir)
    workdir, train_seconds = common.train_stage(config, workdirs, f"keyframes_{dataset}")
    trained = load_trained(workdir, config)
    window = config.view.frames
    c, target = window // 2, EXTENSION * window
    clips = pipeline.test_clips(config.data, p["clips"])
    real = continuation.real_view(clips["video"], config, target, SEED)
    labels = clips["label"] if config.model.num_classes > 0 else None
    # FVD noise: two disjoint halves of the real windows against each other.
    noise = continuation_quality.extension_quality(
        real[: len(real) // 2],
        real[len(real) // 2 :],
        data_name=dataset,
        fvd_videos=p["fvd_videos"],
        cache=fvd_cache,
    )
    results = []
    for method, w_r in METHODS:
        video, seconds = continue_clips(trained, real, labels, method, w_r, p)
        quality = continuation_quality.extension_quality(
            video,
            real,
            data_name=dataset,
            labels=labels,
            fvd_videos=p["fvd_videos"],
            cache=fvd_cache,
        )
        results.append(
            {
                "method": method,
                "w_r": w_r,
                "seconds": seconds,
                "psnr": per_clip_psnr(video, real, c, min(target, real.shape[1])),  # [N, F]
                "offsets": continuation.offset_metrics(video, real, c),
                "quality": quality,
            }
        )
    real_content = continuation_quality.extension_quality(
        real, real, data_name=dataset, labels=labels
    )
    return {
        "dataset": dataset,
        "workdir": str(workdir),
        "train_steps": int(config.train.steps),
        "train_seconds": train_seconds,
        "window": window,
        "given": c,
        "target": target,
        "true_frames": int(real.shape[1]),
        "clips": int(len(real)),
        "real_content": real_content["content"],
        "fvd_noise": noise["fvd_windows"].get("fvd"),
        "fvd_protocol": fvd.FVDProtocol.__name__,
        "results": results,
    }


def verdict_psnr(ours: np.ndarray, ref: np.ndarray) -> str:
    """Paired per-clip PSNR difference (clips [N]) as a verdict within 2 standard errors."""
    diff = np.asarray(ours) - np.asarray(ref)
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.inf
    if not np.isfinite(se) or abs(diff.mean()) <= 2 * se:
        return "inconclusive"
    return "reconstruction better" if diff.mean() > 0 else "replacement better"


def verdict_fvd(ours: Any, ref: Any, noise: Any) -> str:
    """FVD difference against the real-vs-real FVD (the noise at this sample size)."""
    if not (tables.finite(ours) and tables.finite(ref) and tables.finite(noise)):
        return "n/a"
    if abs(ours - ref) <= noise:
        return "inconclusive"
    return "reconstruction better" if ours < ref else "replacement better"


def table_rows(datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per data set, task and method (prediction: the first window's generated
    frames; extension: every generated frame up to 4T), with verdicts against replacement."""
    rows = []
    for d in datasets:
        ref = d["results"][0]
        n_pred = d["window"] - d["given"]
        for r in d["results"]:
            for task, psnr, ref_psnr in (
                ("prediction", r["psnr"][:, :n_pred], ref["psnr"][:, :n_pred]),
                (f"{EXTENSION}x extension", r["psnr"], ref["psnr"]),
            ):
                row = {
                    "dataset": d["dataset"],
                    "task": task,
                    "method": r["method"]
                    if r["method"] == "replacement"
                    else f"reconstruction w_r={r['w_r']:g}",
                    "psnr": float(psnr.mean()),
                    "psnr_se": float(psnr.mean(axis=1).std(ddof=1) / np.sqrt(len(psnr)))
                    if len(psnr) > 1
                    else None,
                    "seconds": r["seconds"],
                }
                extension = task != "prediction"
                q = r["quality"]
                for key, _ in CONTENT[d["dataset"]]:
                    row[key] = q["content"].get(key) if extension else None
                row["fvd"] = q["fvd_windows"].get("fvd") if extension else None
                row["fvd_noise"] = d["fvd_noise"] if extension else None
                if r is ref:
                    row["verdict"] = "reference"
                else:
                    row["verdict"] = "PSNR: " + verdict_psnr(
                        psnr.mean(axis=1), ref_psnr.mean(axis=1)
                    )
                    if extension:
                        fvd_ref = ref["quality"]["fvd_windows"].get("fvd")
                        row["verdict"] += "; FVD: " + verdict_fvd(
                            row["fvd"], fvd_ref, d["fvd_noise"]
                        )
                rows.append(row)
    return rows


def run(
    out: str | Path,
    *,
    preset: str = "tiny",
    data_dir: str | Path = "results/data",
    workdirs: str | Path = "results/workdirs",
) -> dict[str, Any]:
    """Train, continue, measure both data sets; write the outputs; returns results.json's content."""
    from cascade.evaluation.fvd import FeatureCache

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = FeatureCache()
    datasets = [run_dataset(name, preset, data_dir, workdirs, cache) for name in DATASETS]
    result = {
        "experiment": NAME,
        "preset": preset,
        "preset_settings": PRESETS[preset],
        "seeds": {"train": SEED, "sampling_key": SEED, "real_view": SEED},
        "extension": EXTENSION,
        "datasets": datasets,
        "rows": table_rows(datasets),
    }
    result["environment"] = environment(time.perf_counter() - start)
    result["markdown"] = write_outputs(out, result)
    return result


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    common.define_output_flags(fv, PRESETS, DEFAULT_OUT)
    return fv


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    from cascade import cli

    def body(args: cli.Args) -> None:
        fv = args.flags
        out = common.checked_out(fv, DEFAULT_OUT)
        result = run(out, preset=fv.preset, data_dir=fv.data_dir, workdirs=fv.workdirs)
        print(result["markdown"])
        print(f"Results in {out}")

    return cli.entry(body, define_flags(), __doc__, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
