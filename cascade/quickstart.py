"""`make quickstart`: build the embedded data, train a tiny cascade, sample it, measure it.

    python -m cascade.quickstart --out=results/quickstart

Steps (each resumes if its output already exists, so a rerun finishes quickly):
  1. build moving_digits and bouncing_shapes into OUT/data, write previews;
  2. train the keyframe, temporal-SR and spatial-SR stages (`quick` presets) in OUT/<stage>,
     side by side, and score each SR stage against its trivial baselines (PSNR/SSIM);
  3. run the cascade, writing videos of every stage to OUT/cascade;
  4. evaluate: FVD/KVD of the cascade's videos against real test clips, parameters and
     timings -> OUT/metrics.json.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from cascade import cli, json_io  # noqa: E402

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
DATASETS = ("moving_digits", "bouncing_shapes")
LOG_NAME = "quickstart.log"


def stage_config(name: str, data_dir: Path, steps: int | None):
    from cascade import config_checks, configs

    config = configs.load(f"{name}:quick")
    config.data.data_dir = str(data_dir)
    # No end-of-training preview: the cascade's videos show every stage's output (its
    # stages.gif; TensorBoard's samples/<stage> images), and previews cost ~40 s of CPU.
    config.train.num_samples = 0
    if steps is not None:
        config.train.steps = steps
        config.train.checkpoint_every = min(config.train.checkpoint_every, steps)
        config.train.warmup_steps = min(config.train.warmup_steps, max(steps // 10, 1))
    return config_checks.validate(config)


def cascade_config(out: Path):
    """The quickstart's cascade (`cascade:quick`) over the stages trained in OUT/<stage>."""
    from cascade import configs

    config = configs.load("cascade:quick")
    for name in STAGES:
        config.stages[name].workdir = str(out / name)
    return config


def train_and_score(name: str, out: Path, steps: int | None, num_videos: int, stop) -> dict:
    """One stage, in its own thread: train it, then score an SR stage against its trivial
    baselines on held-out clips (sampled as the cascade samples it). Returns its seconds,
    where its training time went, and (SR stages) the scores."""
    from cascade.evaluation.evaluate import evaluate_super_resolution
    from cascade.sampling.runners import with_cascade_sampling
    from cascade.training.concurrent import StoppableTrainer
    from cascade.training.trained import config_from_checkpoint, load_trained

    tick = time.perf_counter()
    trainer = StoppableTrainer(stage_config(name, out / "data", steps), out / name, stop)
    trainer.train()
    result = {"train_seconds": time.perf_counter() - tick, "time_spent": trainer.time_spent}
    if name != STAGES[0]:
        tick = time.perf_counter()
        workdir = out / name
        config = with_cascade_sampling(cascade_config(out), name, config_from_checkpoint(workdir))
        result["super_resolution"] = evaluate_super_resolution(
            load_trained(workdir, config), num_videos
        )
        result["score_seconds"] = time.perf_counter() - tick
    return result


def run(out: Path, *, steps: int | None, num_videos: int, fvd_videos: int) -> dict:
    """The four steps; returns what OUT/metrics.json holds (metrics, seconds per step, and
    where each stage's training time went). Library output goes to OUT/quickstart.log.

    The three stages train side by side (`cascade.training.concurrent`: one quick stage
    leaves part of a small CPU idle), each SR stage scored as soon as it is trained."""
    import functools

    import tensorflow_datasets as tfds
    from tqdm import tqdm

    from cascade import console
    from cascade.data.__main__ import build_and_preview
    from cascade.evaluation.evaluate import evaluate_outputs
    from cascade.sampling.runners import CascadeRunner
    from cascade.training.concurrent import run_concurrently
    from cascade.training.metrics_log import log_evaluation

    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    report: dict = {"seconds": {}, "stage_seconds": {}, "training_time_spent": {}}
    tfds.disable_progress_bar()  # one bar per quickstart step, not one per TFDS split
    with console.log_to_file(out / LOG_NAME):
        tick = time.perf_counter()
        base_data = stage_config("keyframes", data_dir, steps).data
        for dataset in tqdm(DATASETS, desc="build data", dynamic_ncols=True):
            build_and_preview(dataset, base_data, data_dir / "previews" / f"{dataset}.gif")
        report["seconds"]["data"] = time.perf_counter() - tick

        tick = time.perf_counter()  # each trainer shows its own bar
        stages = run_concurrently(
            {
                name: functools.partial(train_and_score, name, out, steps, num_videos)
                for name in STAGES
            }
        )
        report["seconds"]["train_stages_side_by_side"] = time.perf_counter() - tick
        report["super_resolution"] = {}
        for name, result in stages.items():
            report["stage_seconds"][name] = {
                k: result[k] for k in ("train_seconds", "score_seconds") if k in result
            }
            report["training_time_spent"][name] = result["time_spent"]
            if "super_resolution" in result:
                report["super_resolution"][name] = result["super_resolution"]

        with tqdm(total=1, desc="sample cascade", dynamic_ncols=True) as bar:
            tick = time.perf_counter()
            runner = CascadeRunner(cascade_config(out))
            written = runner.write(out / "cascade", num_videos)
            outputs = written.pop("outputs")
            report["seconds"]["cascade_sampling"] = time.perf_counter() - tick
            bar.update()
        report["cascade_timing"] = written
        report["params"] = runner.params()

        with tqdm(total=1, desc="evaluate cascade", dynamic_ncols=True) as bar:
            tick = time.perf_counter()
            report["cascade"] = evaluate_outputs(
                outputs, runner.final_config, runner.labels(num_videos), max_fvd_videos=fvd_videos
            )
            bar.update()
            report["seconds"]["cascade_evaluation"] = time.perf_counter() - tick
        json_io.write_json(out / "metrics.json", report)
        # out/logs: `tensorboard --logdir OUT` shows them as eval/... and each stage's videos
        log_evaluation(out, report, videos={k: v[:8] for k, v in outputs.items()})
    return report


def summary(report: dict, out: Path, total_seconds: float) -> str:
    """The closing summary: time per step (and where training time went), the metrics beside
    their references, and where the outputs are."""
    from cascade import console

    minutes = lambda s: f"{s / 60:.1f} min"  # noqa: E731
    rows = [(step.replace("_", " "), minutes(s)) for step, s in report["seconds"].items()]
    rows.append(("total", minutes(total_seconds)))
    spent = report["training_time_spent"]
    parts = ("first_step_with_compile", "input_pipeline", "train_steps", "checkpoints")
    train_rows = []
    for name in STAGES:
        if name in spent:  # "other": building the model and data, restoring, the final write
            wall = report["stage_seconds"][name]
            other = wall["train_seconds"] - sum(spent[name][k] for k in parts)
            score = wall.get("score_seconds")
            train_rows.append(
                (
                    name,
                    minutes(wall["train_seconds"]),
                    *(f"{spent[name][k]:.0f} s" for k in parts),
                    f"{other:.0f} s",
                    "-" if score is None else f"{score:.0f} s",
                )
            )
    cascade = report["cascade"]
    fvd = cascade["fvd"].get("fvd")
    metric_rows = [("FVD (I3D, cascade vs test clips)", _fmt(fvd), "lower is better")]
    ours, real = cascade.get("digits", {}), cascade.get("real_reference", {}).get("digits", {})
    for key in ("identity_stability", "label_match"):
        if key in ours:
            metric_rows.append(
                (key.replace("_", " "), _fmt(ours[key]), f"real clips {_fmt(real.get(key))}")
            )
    for name, sr in report["super_resolution"].items():
        if sr:
            best = max(sr["baselines"].items(), key=lambda kv: kv[1]["psnr"])
            metric_rows.append(
                (
                    f"{name} PSNR (dB)",
                    _fmt(sr["model"]["psnr"]),
                    f"{best[0]} {_fmt(best[1]['psnr'])}",
                )
            )
            content = sr.get("content")  # the same clips read: does the stage keep identity?
            if content and "digits" in content["model"]:
                identity = lambda m: _fmt(m["digits"]["identity_stability"])  # noqa: E731
                metric_rows.append(
                    (
                        f"{name} identity, given real input",
                        identity(content["model"]),
                        f"{best[0]} {identity(content['baselines'][best[0]])}, "
                        f"real {identity(content['target'])}",
                    )
                )
    return "\n\n".join(
        [
            f"cascade quickstart done in {minutes(total_seconds)}.",
            console.table(rows, ("step", "wall time")),
            "where each stage's time went (the stages ran side by side, sharing the cores):\n"
            + console.table(
                train_rows,
                (
                    "stage",
                    "training",
                    "1st step+compile",
                    "input",
                    "steps",
                    "ckpt",
                    "other",
                    "SR scores",
                ),
            ),
            console.table(metric_rows, ("metric", "cascade", "reference")),
            f"videos: {out / 'cascade'}/final.gif (all stages side by side: stages.gif)\n"
            f"metrics: {out / 'metrics.json'}   log: {out / LOG_NAME}\n"
            f"curves: tensorboard --logdir {out}",
        ]
    )


def _fmt(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3g}"  # x != x: NaN (nothing readable)


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
    print(f"cascade quickstart: writing to {out} (details in {out / LOG_NAME})")
    start = time.perf_counter()
    report = run(out, steps=args.steps, num_videos=args.num_videos, fvd_videos=args.fvd_videos)
    print(summary(report, out, time.perf_counter() - start))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    return cli.entry(_body, FLAGS, __doc__, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
