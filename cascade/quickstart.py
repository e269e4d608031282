"""`make quickstart`: build the embedded data, train a tiny cascade, sample it, measure it.

    python -m cascade.quickstart --out=results/quickstart

Steps (each resumes if its output already exists, so a rerun finishes quickly):
  1. build moving_digits and bouncing_shapes into OUT/data, write previews;
  2. train the keyframe, temporal-SR and spatial-SR stages (`quick` presets) in OUT/<stage>;
  3. run the cascade, writing videos of every stage to OUT/cascade;
  4. evaluate: FVD/KVD of the cascade's videos against real test clips, each SR
     stage against its trivial baseline (PSNR/SSIM), parameters and timings -> OUT/metrics.json.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from cascade import cli  # noqa: E402

FLAGS = cli.new_flags()
flags.DEFINE_string(
    "out",
    "results/quickstart",
    "Local folder for data, workdirs, videos, metrics (a rerun resumes from it).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "steps", None, "Training steps of every stage, >= 1 (default: the presets').", flag_values=FLAGS
)
flags.DEFINE_integer(
    "num_videos", 16, "Cascade videos to sample and evaluate, >= 1.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "fvd_videos",
    16,
    "Videos per side for FVD, >= 2 (I3D is ~2.6 s/clip on 2 cores).",
    flag_values=FLAGS,
)

STAGES = ("keyframes", "temporal_sr", "spatial_sr")


def stage_config(name: str, data_dir: Path, steps: int | None):
    from cascade import config_checks, configs

    config = configs.load(f"{name}:quick")
    config.data.data_dir = str(data_dir)
    if steps is not None:
        config.train.steps = steps
        config.train.checkpoint_every = min(config.train.checkpoint_every, steps)
        config.train.warmup_steps = min(config.train.warmup_steps, max(steps // 10, 1))
    return config_checks.validate(config)


def run(out: Path, *, steps: int | None, num_videos: int, fvd_videos: int) -> dict:
    from cascade import configs
    from cascade.data.__main__ import build_and_preview
    from cascade.evaluation.evaluate import evaluate_outputs, evaluate_super_resolution
    from cascade.sampling.runners import CascadeRunner
    from cascade.training.trainer import Trainer

    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    report: dict = {"seconds": {}}
    tick = time.perf_counter()
    base_data = stage_config("keyframes", data_dir, steps).data
    for dataset in ("moving_digits", "bouncing_shapes"):
        build_and_preview(dataset, base_data, data_dir / "previews" / f"{dataset}.gif")
    report["seconds"]["data"] = time.perf_counter() - tick

    for name in STAGES:
        tick = time.perf_counter()
        Trainer(stage_config(name, data_dir, steps), out / name).train()
        report["seconds"][f"train_{name}"] = time.perf_counter() - tick

    config = configs.load("cascade:quick")
    for name in STAGES:
        config.stages[name].workdir = str(out / name)
    tick = time.perf_counter()
    runner = CascadeRunner(config)
    written = runner.write(out / "cascade", num_videos)
    outputs = written.pop("outputs")
    report["seconds"]["cascade_sampling"] = time.perf_counter() - tick
    report["cascade_timing"] = written
    report["params"] = runner.params()

    tick = time.perf_counter()
    report["cascade"] = evaluate_outputs(
        outputs, runner.final_config, runner.labels(num_videos), max_fvd_videos=fvd_videos
    )
    report["super_resolution"] = {
        name: evaluate_super_resolution(runner.stages[i][1], num_videos)
        for i, name in enumerate(STAGES)
        if i > 0
    }
    report["seconds"]["evaluation"] = time.perf_counter() - tick
    (out / "metrics.json").write_text(json.dumps(report, indent=2, default=float))
    return report


def _body(args: cli.Args) -> None:
    if args.steps is not None and args.steps < 1:
        raise cli.UsageError(f"--steps must be >= 1, got {args.steps}.")
    if args.num_videos < 1:
        raise cli.UsageError(f"--num_videos must be >= 1, got {args.num_videos}.")
    if args.fvd_videos < 2:
        raise cli.UsageError(
            f"--fvd_videos must be >= 2 (FVD compares two sets), got {args.fvd_videos}."
        )
    out = cli.check_writable_dir(args.out, "--out")
    start = time.perf_counter()
    report = run(out, steps=args.steps, num_videos=args.num_videos, fvd_videos=args.fvd_videos)
    print(
        json.dumps({k: report[k] for k in ("cascade", "super_resolution")}, indent=2, default=float)
    )
    print(
        f"\nDone in {(time.perf_counter() - start) / 60:.1f} min. Videos: {out / 'cascade'}/final.gif, "
        f"all stages side by side: {out / 'cascade'}/stages.gif, metrics: {out / 'metrics.json'}"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    return cli.entry(_body, FLAGS, __doc__, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
