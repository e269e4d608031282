"""Entry point for every experiment.

    python -m cascade.main --config=configs/keyframes.py:tiny --workdir=/tmp/keyframes --mode=train
    python -m cascade.main --config=configs/keyframes.py:tiny --workdir=/tmp/keyframes --mode=sample
    python -m cascade.main --config=configs/cascade.py --workdir=/tmp/cascade --mode=sample

Any config field can be overridden: `--config.train.steps=100`. A key that does
not exist, a value of the wrong type, an unknown preset or shapes that do not
chain stop the run before anything is trained, with a message naming the key.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from cascade import cli  # noqa: E402

FLAGS = cli.new_flags()
cli.define_config(
    FLAGS,
    "Config file: a stage (configs/keyframes.py, ...), configs/cascade.py or configs/single_stage.py.",
)
flags.DEFINE_string(
    "workdir",
    None,
    "Local directory for checkpoints, logs (TensorBoard) and samples; training resumes if it "
    "holds a checkpoint. For --mode=sample/evaluate of a stage: the workdir it was trained in.",
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "sample", "evaluate"],
    "train: train the stage (resuming from workdir). sample: write videos from the trained "
    "stage / cascade / single-stage runner. evaluate: sample and compute metrics against the "
    "test split.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "num_samples", None, "Videos to sample (default: the config's).", flag_values=FLAGS
)


def refuse_mode(config, mode: str) -> None:
    """Configs that this entry point cannot run in `mode`, refused before anything is loaded."""
    from cascade.configs import ConfigError

    if config.stage in ("cascade", "single_stage") and mode == "train":
        raise ConfigError(
            f"a {config.stage} config chains trained stages and is not trained itself; train "
            "each stage with its own config (configs/keyframes.py, configs/temporal_sr.py, ...), "
            "then use --mode=sample or --mode=evaluate."
        )
    if config.stage == "distill":
        raise ConfigError(
            "configs/distill.py runs through its own entry point: python -m cascade.distillation "
            "--config=configs/distill.py --workdir=OUT --config.distill.teacher_workdir=W."
        )


def run(config, workdir: str, mode: str, num_samples: int | None = None):
    """Dispatch on config.stage and mode; returns what the mode produced (state, paths, metrics)."""
    from cascade.training import parallel

    refuse_mode(config, mode)
    parallel.maybe_initialize_distributed()
    if config.stage in ("cascade", "single_stage"):
        from cascade.sampling.runners import build_runner

        runner = build_runner(config)
        if mode == "sample":
            return runner.write(workdir, num_samples)
        from cascade.evaluation.evaluate import evaluate_runner

        return evaluate_runner(runner, config, workdir, num_samples)
    if mode == "train":
        from cascade.training.trainer import Trainer

        return Trainer(config, workdir).train()
    from cascade.training.trained import load_trained

    trained = load_trained(workdir, config)
    if mode == "sample":
        from cascade.sampling.runners import sample_to_files

        return sample_to_files(trained, workdir, num_samples or config.train.num_samples)
    from cascade.evaluation.evaluate import evaluate_stage

    return evaluate_stage(trained, workdir, num_samples)


def _body(args: cli.Args) -> None:
    config, mode = args.config, args.mode
    if args.num_samples is not None and args.num_samples < 1:
        raise cli.UsageError(f"--num_samples must be >= 1, got {args.num_samples}.")
    if (
        mode == "sample"
        and args.num_samples is None
        and config.stage
        not in (
            "cascade",
            "single_stage",
        )
        and config.train.num_samples < 1
    ):
        raise cli.UsageError(
            "config.train.num_samples is 0: pass --num_samples=N to say how many videos to sample."
        )
    refuse_mode(config, mode)
    cli.check_config_paths(config, workdir=args.workdir, mode=mode)
    run(config, str(args.workdir), mode, args.num_samples)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    return cli.entry(_body, FLAGS, __doc__, argv, required=("workdir",), config=True)


if __name__ == "__main__":
    sys.exit(main())
