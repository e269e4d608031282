"""Entry point for every experiment.

    python -m cascade.main --config=configs/keyframes.py:tiny --workdir=/tmp/keyframes --mode=train
    python -m cascade.main --config=configs/keyframes.py:tiny --workdir=/tmp/keyframes --mode=sample
    python -m cascade.main --config=configs/cascade.py --workdir=/tmp/cascade --mode=sample
    python -m cascade.main --config=configs/keyframes.py:tiny --workdir=/tmp/keyframes
        --mode=sample --condition=frames --given_frames=2 --target_frames=6

Any config field can be overridden: `--config.train.steps=100`. A key that does
not exist, a value of the wrong type, an unknown preset or shapes that do not
chain stop the run before anything is trained, with a message naming the key.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from cascade import cli  # noqa: E402

if TYPE_CHECKING:
    from cascade.evaluation.continuation import Request, RunnerRequest
    from cascade.evaluation.continuation_latent import LatentRequest

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
# Conditional generation (VDM sec. 3.1) with one trained keyframe stage: see
# cascade/evaluation/continuation.py for what is written.
flags.DEFINE_enum(
    "condition",
    "none",
    ["none", "frames"],
    "none: sample from noise. frames: give the first --given_frames frames of each test clip "
    "and generate the rest (to --target_frames, autoregressively past the stage's window); "
    "writes samples/<stage>_continuation* and PSNR/SSIM per frame offset. A keyframe stage, "
    "the cascade (configs/cascade.py: keyframes extended, then SR window by window), a latent "
    "DiT (configs/latent_dit.py) or the single-stage runner (configs/single_stage.py).",
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "method",
    "reconstruction",
    ["replacement", "reconstruction"],
    "With --condition=frames: replacement (noised given frames) or VDM reconstruction guidance "
    "(the default for U-Net stages; a latent DiT has replacement only, its default).",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "w_r",
    None,
    "With --method=reconstruction: guidance weight (default 2; VDM: w_r > 1 helps).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "given_frames",
    None,
    "With --condition=frames: the first c frames of each test clip are given (default: half "
    "the stage's window). For a latent DiT, --given_frames/--target_frames/--overlap count "
    "video frames and must each be 1 + 4k (the causal VAE's 1 + k latent frames).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "target_frames",
    None,
    "With --condition=frames: frames of the finished clip (default: the stage's window); more "
    "than the window extends window by window: given_frames + k * (window - overlap).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "overlap",
    None,
    "With --condition=frames: frames each extension window is conditioned on (default: "
    "--given_frames).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "condition_video",
    None,
    "With --condition=frames: take the given frames (and the true continuation, if longer) "
    "from this .gif / .mp4 / .npy file instead of the test split; its frames must have the "
    "generated frames' resolution and channels (a latent DiT: its view's, not the latents').",
    flag_values=FLAGS,
)
CONDITION_FLAGS = ("method", "w_r", "given_frames", "target_frames", "overlap", "condition_video")


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


def run(
    config,
    workdir: str,
    mode: str,
    num_samples: int | None = None,
    continuation: Request | RunnerRequest | LatentRequest | None = None,
    condition_video: str | None = None,
):
    """Dispatch on config.stage and mode; returns what the mode produced (state, paths, metrics).

    continuation: a `cascade.evaluation.continuation.Request` (--condition=frames; for the
    cascade a `RunnerRequest`, checked once the runner is built; for a latent_dit stage or the
    single-stage runner a `continuation_latent.LatentRequest`, checked once the DiT and its VAE
    are loaded): sample and evaluate both continue test clips (or the clips of
    `condition_video`) and score them; evaluate adds the quality metrics."""
    from cascade.training import parallel

    refuse_mode(config, mode)
    parallel.maybe_initialize_distributed()
    if config.stage in ("cascade", "single_stage"):
        from cascade.sampling.runners import build_runner

        runner = build_runner(config)
        if continuation is not None and config.stage == "single_stage":  # the latent DiT's
            from cascade.evaluation.continuation_latent import write_runner_latent_continuations

            return write_runner_latent_continuations(
                runner,
                workdir,
                continuation,
                num_samples or config.num_samples,
                video_path=condition_video,
                quality=mode == "evaluate",
            )
        if continuation is not None:  # a runner's request is checked against its first stage
            from cascade.evaluation.continuation_cascade import write_runner_continuations

            request = continuation.check(runner.keyframes.config)
            return write_runner_continuations(
                runner,
                workdir,
                request,
                num_samples or config.num_samples,
                video_path=condition_video,
                quality=mode == "evaluate",
            )
        if mode == "sample":
            return runner.write(workdir, num_samples)
        from cascade.evaluation.evaluate import evaluate_runner

        return evaluate_runner(runner, config, workdir, num_samples)
    if mode == "train":
        from cascade.training.trainer import Trainer

        return Trainer(config, workdir).train()
    from cascade.training.trained import load_trained

    trained = load_trained(workdir, config)
    if continuation is not None and config.stage == "latent_dit":  # counts in video frames
        from cascade.evaluation.continuation_latent import write_latent_continuations

        return write_latent_continuations(
            trained,
            os.path.join(workdir, "samples"),
            "latent_dit_continuation",
            continuation,
            num_samples or config.train.num_samples,
            video_path=condition_video,
            quality=mode == "evaluate",
        )
    if continuation is not None:
        from cascade.evaluation.continuation import write_continuations

        return write_continuations(
            trained,
            workdir,
            continuation,
            num_samples or config.train.num_samples,
            video_path=condition_video,
            quality=mode == "evaluate",
        )
    if mode == "sample" and "causal" in config:  # a causal DiT: config.causal.length x longer
        from cascade.sampling.rollout import write_long_samples

        return write_long_samples(trained, workdir, num_samples or config.train.num_samples)
    if mode == "sample" and config.stage == "av_dit":  # clips with their generated sound
        from cascade.sampling.runners import write_av_samples

        return write_av_samples(trained, workdir, num_samples or config.train.num_samples)
    if config.stage == "av_dit":  # evaluate: clips with sound, the sync metric
        from cascade.evaluation.av_evaluate import evaluate_av

        return evaluate_av(trained, workdir, num_samples)
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
    continuation = condition_request(args)
    cli.check_config_paths(config, workdir=args.workdir, mode=mode)
    run(config, str(args.workdir), mode, args.num_samples, continuation, args.condition_video)


def condition_request(args: cli.Args) -> Request | RunnerRequest | LatentRequest | None:
    """The checked --condition=frames request, or None; refuses conditioning flags without
    it. Runs before any path is checked or anything is loaded."""
    if args.condition == "none":
        given = [f"--{name}" for name in CONDITION_FLAGS if args.flags[name].present]
        if given:
            raise cli.UsageError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only with "
                "--condition=frames (conditional generation from the first frames of test clips)."
            )
        return None
    from cascade.evaluation.continuation import check_request, check_runner_request
    from cascade.evaluation.continuation_latent import LATENT_CONFIGS, check_latent_request

    numbers = {
        "mode": args.mode,
        "method": args.method,
        "w_r": args.w_r,
        "given_frames": args.given_frames,
        "target_frames": args.target_frames,
        "overlap": args.overlap,
    }
    if args.config.stage in LATENT_CONFIGS:  # replacement only: --method only when typed
        numbers["method"] = args.method if args.flags["method"].present else None
        request = check_latent_request(args.config, **numbers)
        if args.config.stage == "single_stage":  # the rest is checked once the DiT is loaded
            return request
    elif args.config.stage == "cascade":
        return check_runner_request(args.config, **numbers)
    else:
        request = check_request(args.config, **numbers)  # a stage config: config.train exists
    if args.condition_video:  # its frames must be the stage's: refused before anything loads
        from cascade.sampling.conditional import read_condition_video

        v = args.config.view
        read_condition_video(args.condition_video, (v.resolution, v.resolution, v.channels))
    if args.num_samples is None and args.config.train.num_samples < 1:
        raise cli.UsageError(
            "config.train.num_samples is 0: pass --num_samples=N to say how many test clips to "
            "continue."
        )
    return request


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    return cli.entry(_body, FLAGS, __doc__, argv, required=("workdir",), config=True)


if __name__ == "__main__":
    sys.exit(main())
