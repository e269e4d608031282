"""Progressive distillation (Salimans & Ho 2022) of a trained stage into a few-step sampler.

    python -m cascade.distillation --config=configs/distill.py --workdir=OUT \
        --config.distill.teacher_workdir=WORKDIR_OF_A_TRAINED_STAGE

Works for every Gaussian stage of the cascade (keyframes, TSR, SSR: as Imagen Video
distilled each of its models) and for the flow-matching latent DiT. Round r
halves the step count: a student that starts from its teacher's weights learns
to take one step where the teacher (the previous round's student) takes two,
from `start_steps` down to `end_steps`. Each round lasts `steps_per_round`
optimizer steps through the one trainer (mesh, EMA, checkpoints, resume).

The result in OUT is an ordinary checkpoint of the same stage whose config
samples deterministically (DDIM / Euler) in `end_steps` steps, so
`--mode=sample`, the cascade runner and the single-stage runner use it as is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections  # noqa: E402

from cascade.configs import ConfigError  # noqa: E402


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Distil (resuming if workdir has checkpoints) and report student vs teacher."""
    from cascade.training.distillation import DistillationTrainer  # heavy: after flag checks

    trainer = DistillationTrainer(config, workdir)
    trainer.train()
    return trainer.compare()


FLAGS = None  # the command line's flags, defined only when run as a program


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    from absl import flags

    from cascade import cli

    global FLAGS
    if FLAGS is None:
        FLAGS = cli.new_flags()
        cli.define_config(
            FLAGS, "Distillation config, e.g. configs/distill.py (set distill.teacher_workdir)."
        )
        flags.DEFINE_string(
            "workdir",
            None,
            "Local directory the distilled stage is written to (resumes if it holds a checkpoint).",
            flag_values=FLAGS,
        )

    def body(args: cli.Args) -> None:
        if args.config.stage != "distill":
            raise ConfigError(
                f"cascade.distillation needs a distillation config (configs/distill.py); got a "
                f"{args.config.stage} config. Train stages with python -m cascade.main."
            )
        cli.check_config_paths(args.config, workdir=args.workdir, mode="train")
        run(args.config, args.workdir)

    return cli.entry(body, FLAGS, __doc__, argv, required=("workdir",), config=True)


if __name__ == "__main__":
    import sys

    sys.exit(main())
