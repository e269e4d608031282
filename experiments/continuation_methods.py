"""Replacement vs VDM reconstruction guidance for frame prediction and 4x extension.

    python -m experiments.continuation_methods --preset=cpu --seeds=3

For moving_digits and bouncing_shapes and each training seed, a small keyframe stage (window
T frames, stride 1) is trained (or reused: workdirs are named by config hash), then the first
c = T/2 frames of the same test clips are given and each method continues them
autoregressively to 4T frames (windows of T frames, each conditioned on the last c frames so
far), sampling with the seed as its key:

  replacement                 the known part of z_t replaced by a noised copy (VDM sec. 3.1)
  reconstruction, w_r = 1/2/5 the same plus the eq. 7 gradient correction

Frame prediction is the first window of the extension (the same key): generated frames c..T-1
scored against the true ones. The 4x extension is the whole clip: PSNR / SSIM per frame offset
against the true continuation, identity stability and motion residual (moving_digits), the
physics metrics (bouncing_shapes) over the whole clip, and FVD of its 16-frame windows
against real 16-frame windows (`cascade.evaluation.continuation_quality`).

VDM (Ho et al. 2022, table 6) reports, at 16 -> 64 frames on UCF101, FVD 451 for replacement
and 136 for reconstruction guidance. The verdict column says which method came out better
here, or "inconclusive" when the difference is inside the noise: for PSNR, when the 95%
interval of a hierarchical bootstrap (seeds, then clips; paired: every method continues the
same clips with the same key) of the difference contains 0; for FVD (mean over seeds), when
the difference is smaller than the FVD between two disjoint halves of the real windows (the
sampling noise at this many videos).

Each (data set, seed) is a run of its own under OUT/runs/ (`runs.RunStore`): a rerun reads
finished ones back and trains nothing already trained. Writes
experiments/results/continuation_methods/<preset>/results.{md,csv,json} and
error_vs_offset.png, with the commit, the CPU model (lscpu), the seeds and the wall time.
Self-contained on purpose (its own presets; outputs in continuation_methods_report.py):
experiments/common.py is used read-only for training in hash-named workdirs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from experiments import common, runs, stats, tables  # noqa: E402
from experiments.continuation_methods_report import table_rows, write_outputs  # noqa: E402
from experiments.tables import environment  # noqa: E402

NAME = "continuation_methods"
DATASETS = ("moving_digits", "bouncing_shapes")
METHODS = (
    ("replacement", 0.0),
    ("reconstruction", 1.0),
    ("reconstruction", 2.0),
    ("reconstruction", 5.0),
)
REAL_VIEW_SEED = 0  # every seed continues the same real windows
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
        "seeds": 1,
        "bootstrap": 50,
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
        "seeds": 3,
        "bootstrap": 1000,
    },
}
EXTENSION = 4  # target = EXTENSION x the window
DEFAULT_OUT = f"experiments/results/{NAME}"


def stage_config(dataset: str, preset: str, data_dir: str | Path, seed: int = 0):
    """The keyframe stage trained on `dataset` at `preset` with `seed` (moving_digits:
    class-conditional grey digits; bouncing_shapes: unconditional RGB)."""
    from cascade import config_checks, configs

    p = PRESETS[preset]
    config = configs.load(f"keyframes:{p['base']}")
    config.seed = seed
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


def continue_clips(
    trained, real: np.ndarray, labels, method: str, w_r: float, p: dict, seed: int
) -> Any:
    """The 4x extension of real[:, :c] (c = window / 2) with one method (sampling key
    `seed`), and its seconds."""
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
        key=jax.random.key(seed),
        method=method,
        w_r=w_r,
        labels=labels,
        steps=p["sample_steps"],
    )
    return video, time.perf_counter() - start


def measure_seed(
    dataset: str, seed: int, preset: str, data_dir, workdirs, real, labels, fvd_cache
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One seed on `dataset`: the stage trained (or reused) at `seed`, the real clips `real`
    [N, F, ...] continued by every method; arrays '<method index>__psnr' [N, generated
    frames] and the facts (workdir, seconds, per-offset metrics, content and FVD)."""
    from cascade.evaluation import continuation, continuation_quality
    from cascade.training.trained import load_trained

    p = PRESETS[preset]
    config = stage_config(dataset, preset, data_dir, seed)
    workdir, train_seconds = common.train_stage(config, workdirs, f"keyframes_{dataset}")
    trained = load_trained(workdir, config)
    c, target = config.view.frames // 2, EXTENSION * config.view.frames
    arrays, methods = {}, []
    for i, (method, w_r) in enumerate(METHODS):
        video, seconds = continue_clips(trained, real, labels, method, w_r, p, seed)
        arrays[f"{i}__psnr"] = per_clip_psnr(video, real, c, min(target, real.shape[1]))
        methods.append(
            {
                "method": method,
                "w_r": w_r,
                "seconds": seconds,
                "offsets": continuation.offset_metrics(video, real, c),
                "quality": continuation_quality.extension_quality(
                    video,
                    real,
                    data_name=dataset,
                    labels=labels,
                    fvd_videos=p["fvd_videos"],
                    cache=fvd_cache,
                ),
            }
        )
    facts = {"seed": seed, "workdir": str(workdir), "train_seconds": train_seconds}
    return arrays, {**facts, "train_steps": int(config.train.steps), "methods": methods}


def run_dataset(
    dataset: str, preset: str, seeds: int, data_dir, workdirs, fvd_cache, store: runs.RunStore
) -> dict[str, Any]:
    """Every seed on `dataset` (finished ones read back from `store`), pooled per method."""
    from cascade.data import pipeline
    from cascade.evaluation import continuation, continuation_quality, fvd

    p = PRESETS[preset]
    config = stage_config(dataset, preset, data_dir)
    window = config.view.frames
    c, target = window // 2, EXTENSION * window
    clips = pipeline.test_clips(config.data, p["clips"])
    real = continuation.real_view(clips["video"], config, target, REAL_VIEW_SEED)
    labels = clips["label"] if config.model.num_classes > 0 else None
    # FVD noise: two disjoint halves of the real windows against each other.
    noise = continuation_quality.extension_quality(
        real[: len(real) // 2],
        real[len(real) // 2 :],
        data_name=dataset,
        fvd_videos=p["fvd_videos"],
        cache=fvd_cache,
    )
    per_seed = [
        store.get(
            f"{dataset}/seed{s}",
            lambda s=s: measure_seed(
                dataset, s, preset, data_dir, workdirs, real, labels, fvd_cache
            ),
        )
        for s in range(seeds)
    ]
    results = []
    for i, (method, w_r) in enumerate(METHODS):
        done = [info["methods"][i] for _, info in per_seed]
        fvds = [d["quality"]["fvd_windows"].get("fvd") for d in done]
        content = {
            key: stats.mean_std([d["quality"]["content"].get(key) for d in done])[0]
            for key in done[0]["quality"]["content"]
        }
        results.append(
            {
                "method": method,
                "w_r": w_r,
                "seconds": float(np.mean([d["seconds"] for d in done])),
                "psnr": [arrays[f"{i}__psnr"] for arrays, _ in per_seed],  # per seed [N, F]
                "offsets": [d["offsets"] for d in done],
                "content": content,
                "fvd": stats.mean_std(fvds)[0] if all(tables.finite(f) for f in fvds) else None,
                "fvd_per_seed": fvds,
            }
        )
    real_content = continuation_quality.extension_quality(
        real, real, data_name=dataset, labels=labels
    )
    return {
        "dataset": dataset,
        "seeds": [info for _, info in per_seed],
        "train_steps": int(config.train.steps),
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


def run(
    out: str | Path,
    *,
    preset: str = "tiny",
    data_dir: str | Path = "results/data",
    workdirs: str | Path = "results/workdirs",
    seeds: int | None = None,
) -> dict[str, Any]:
    """Train, continue, measure both data sets at `seeds` seeds (default: the preset's);
    write the outputs; returns results.json's content."""
    from cascade.evaluation.fvd import FeatureCache

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = seeds or PRESETS[preset]["seeds"]
    store = runs.RunStore(out / "runs", fingerprint(preset))
    cache = FeatureCache()
    datasets = [
        run_dataset(name, preset, seeds, data_dir, workdirs, cache, store) for name in DATASETS
    ]
    result = {
        "experiment": NAME,
        "preset": preset,
        "preset_settings": PRESETS[preset],
        "seeds": {"train": list(range(seeds)), "sampling_key": "the training seed"},
        "real_view_seed": REAL_VIEW_SEED,
        "extension": EXTENSION,
        "datasets": datasets,
        "rows": table_rows(datasets, PRESETS[preset]["bootstrap"]),
        "runs": {"reused": store.reused, "computed": store.computed},
    }
    result["environment"] = environment(time.perf_counter() - start)
    result["markdown"] = write_outputs(out, result)
    return result


def fingerprint(preset: str) -> str:
    """What a finished run depends on: the preset's settings (less the seed count and the
    bootstrap), the methods, and both data sets' stage configs."""
    settings = {k: v for k, v in PRESETS[preset].items() if k not in ("seeds", "bootstrap")}
    exp = {"preset": settings, "methods": METHODS, "extension": EXTENSION}
    stages = {d: common.config_hash(stage_config(d, preset, "fingerprint")) for d in DATASETS}
    return runs.fingerprint({**exp, "real_view_seed": REAL_VIEW_SEED}, stages)


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    common.define_output_flags(fv, PRESETS, DEFAULT_OUT)
    flags.DEFINE_integer(
        "seeds",
        None,
        "Training seeds (default: the preset's, tiny 1, cpu 3); each trains both data sets' "
        "stages anew and samples with its own key; finished seeds are read back from OUT/runs.",
        lower_bound=1,
        flag_values=fv,
    )
    return fv


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    from cascade import cli

    def body(args: cli.Args) -> None:
        fv = args.flags
        out = common.checked_out(fv, DEFAULT_OUT)
        result = run(
            out, preset=fv.preset, data_dir=fv.data_dir, workdirs=fv.workdirs, seeds=fv.seeds
        )
        print(result["markdown"])
        print(f"Results in {out}")

    return cli.entry(body, define_flags(), __doc__, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
