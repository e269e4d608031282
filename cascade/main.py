"""Entry point for every experiment.

    python -m cascade.main --config=configs/base.py:tiny --workdir=/tmp/base --mode=train
    python -m cascade.main --config=configs/base.py:tiny --workdir=/tmp/base --mode=sample
    python -m cascade.main --config=configs/cascade.py --workdir=/tmp/cascade --mode=sample

Any config field can be overridden: `--config.train.steps=100`. A key that does
not exist, a value of the wrong type, an unknown preset or shapes that do not
chain stop the run before anything is trained, with a message naming the key.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, optionally with a preset: configs/base.py:tiny. Override fields with "
    "--config.section.key=value.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Where checkpoints, logs (TensorBoard) and samples go; resumes if it has a checkpoint.",
)
_MODE = flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "sample", "evaluate"],
    "train: train the stage (resuming from workdir). sample: write videos from the trained "
    "stage / cascade / single-stage runner. evaluate: sample and compute metrics against the "
    "test split.",
)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", None, "Videos to sample (default: config).")


def _user_errors() -> tuple[type[Exception], ...]:
    from cascade.checkpoints import CheckpointError
    from cascade.configs import ConfigError
    from cascade.stages.common import ShapeMismatchError
    from cascade.train import NonFiniteLossError

    errors: list[type[Exception]] = [
        ConfigError,
        ShapeMismatchError,
        CheckpointError,
        NonFiniteLossError,
    ]
    try:
        from cascade.data.loading import DatasetNotFoundError

        errors.append(DatasetNotFoundError)
    except ImportError:
        pass
    return tuple(errors)


def run(config, workdir: str, mode: str, num_samples: int | None = None):
    """Dispatch on config.stage and mode; returns what the mode produced (state, paths, metrics)."""
    from cascade import parallel

    parallel.maybe_initialize_distributed()
    if config.stage in ("cascade", "single_stage"):
        from cascade.runners import build_runner

        runner = build_runner(config)
        if mode == "train":
            raise SystemExit(
                f"error: a {config.stage} config chains trained stages; train each stage with its "
                "own config (configs/base.py, configs/temporal_sr.py, ...), then use --mode=sample."
            )
        if mode == "sample":
            return runner.write(workdir, num_samples)
        from cascade.evaluation.evaluate import evaluate_runner

        return evaluate_runner(runner, config, workdir, num_samples)
    if mode == "train":
        from cascade.train import Trainer

        return Trainer(config, workdir).train()
    from cascade.trained import load_trained

    trained = load_trained(workdir, config)
    if mode == "sample":
        from cascade.sampling import sample_to_files

        return sample_to_files(trained, workdir, num_samples or config.train.num_samples)
    from cascade.evaluation.evaluate import evaluate_stage

    return evaluate_stage(trained, workdir, num_samples)


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax/tfds INFO lines drown the progress bar
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("--config and --workdir are required (see --help).")
    try:
        run(_CONFIG.value, _WORKDIR.value, _MODE.value, _NUM_SAMPLES.value)
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    app.run(main)
