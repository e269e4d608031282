"""How much a trained class-conditional network's output depends on its label.

    python -m cascade.evaluation.label_sensitivity --workdir=W [--step=N] [--clips=32]

Real test clips (in the stage's own space: pixels for the keyframe U-Net, scaled VAE latents
for the latent DiT) are noised to a few levels t of the stage's own time axis (0 = clean,
1 = pure noise: the Gaussian stage's schedule, the flow's interpolation), and the network is
evaluated there with each of the class labels and with the null (classifier-free) label.
The label effect at t is

    sqrt(mean over labels y and elements of (f(z_t, y) - f(z_t, null))^2) / rms(f(z_t, null))

0 means the label is ignored. It answers "has this network learned to use its class
label?" without sampling or a digit reader, so it can be read along training (`--step`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_LEVELS = (0.2, 0.5, 0.8)


def noised_inputs(
    stage: Any, x: jax.Array, eps: jax.Array, t: float
) -> tuple[jax.Array, jax.Array]:
    """(z_t, the network's noise input [B]) for clean x [B, ...] at time t of the stage's axis:
    a flow stage interpolates (1 - t) x + t eps and takes t; a Gaussian stage noises to its
    schedule's log-SNR at t and takes that log-SNR."""
    from cascade.diffusion import flow, gaussian

    times = jnp.full((x.shape[0],), t, jnp.float32)
    if hasattr(stage, "schedule"):  # Gaussian diffusion: the network sees log-SNR
        logsnr = stage.schedule(times)
        return gaussian.q_sample(x, eps=eps, logsnr=logsnr), logsnr
    return flow.flow_interpolate(x, eps=eps, t=times), times


def label_effect(
    stage: Any,
    model: Any,
    outputs: np.ndarray,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    seed: int = 0,
) -> dict[float, float]:
    """The label effect (module doc) at each level for clean stage outputs [B, *output_shape].

    `stage` must be class-conditional with no conditioning channels (the keyframe U-Net, the
    latent DiT); raises ValueError otherwise."""
    num_classes = int(getattr(stage.model_config, "num_classes", 0))
    if num_classes < 1:
        raise ValueError(f"the {stage.name} stage is not class-conditional (model.num_classes=0).")
    if stage.input_shape is not None:
        raise ValueError(f"the {stage.name} stage is conditioned on frames, not only a label.")
    x = jnp.asarray(outputs, jnp.float32)
    eps = jax.random.normal(jax.random.key(seed), x.shape, x.dtype)
    batch = x.shape[0]

    @jax.jit
    def response(z, noise, label):
        return model(z, noise, label=jnp.full((batch,), label, jnp.int32)).astype(jnp.float32)

    effects = {}
    for t in levels:
        z, noise = noised_inputs(stage, x, eps, float(t))
        null = response(z, noise, num_classes)  # class num_classes is the null label
        diff2 = sum(jnp.mean((response(z, noise, y) - null) ** 2) for y in range(num_classes))
        rms_null = jnp.sqrt(jnp.mean(null**2))
        effects[float(t)] = float(jnp.sqrt(diff2 / num_classes) / rms_null)
    return effects


def trained_label_effect(
    workdir: str, *, step: int | None = None, clips: int = 32, levels=DEFAULT_LEVELS
) -> dict[str, Any]:
    """`label_effect` of the stage trained in `workdir` (EMA weights; the checkpoint of `step`
    if given) on the first `clips` test clips."""
    from cascade.data import pipeline, views
    from cascade.training.trained import load_trained

    trained = load_trained(workdir, step=step)
    config, stage = trained.config, trained.stage
    test = pipeline.test_clips(config.data, clips)
    video = views.clip_view(test["video"], config.view, config.data, np.random.default_rng(0))
    effects = label_effect(stage, trained.model(), stage.frames_to_outputs(video), levels=levels)
    return {"stage": stage.name, "step": trained.step, "clips": clips, "label_effect": effects}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    import sys

    from absl import flags

    from cascade import cli

    fv = cli.new_flags()
    flags.DEFINE_string(
        "workdir", None, "A trained keyframes or latent_dit workdir.", flag_values=fv
    )
    flags.DEFINE_integer(
        "step", None, "A kept checkpoint's step (default: the newest).", flag_values=fv
    )
    flags.DEFINE_integer("clips", 32, "Test clips to noise, >= 1.", flag_values=fv)

    def body(args: cli.Args) -> None:
        if args.clips < 1:
            raise cli.UsageError(f"--clips must be >= 1, got {args.clips}.")
        cli.check_trained_workdir(args.workdir, "--workdir")
        try:
            result = trained_label_effect(args.workdir, step=args.step, clips=args.clips)
        except ValueError as err:  # not class-conditional, a step that was not kept
            if isinstance(err, cli.user_errors()):
                raise
            raise cli.UsageError(str(err)) from None
        levels = ", ".join(f"t={t}: {e:.4f}" for t, e in result["label_effect"].items())
        print(f"{result['stage']} at step {result['step']}, {result['clips']} clips: {levels}")

    return cli.entry(body, fv, __doc__, sys.argv if argv is None else argv, required=("workdir",))


if __name__ == "__main__":
    import sys

    sys.exit(main())
