"""Has a trained class-conditional network learned to use its label? Two answers that need
neither sampling nor a digit reader, so they can be read along training (`--step`):

    python -m cascade.evaluation.label_sensitivity --workdir=W [--step=N] [--clips=32]

Real test clips (in the stage's own space: pixels for the keyframe U-Net, scaled VAE latents
for the latent DiT) are noised to a few levels t of the stage's own time axis (0 = clean,
1 = pure noise: the Gaussian stage's schedule, the flow's interpolation).

- Label effect at t: the network evaluated with each class label and with the null
  (classifier-free) label,
  sqrt(mean over labels y and elements of (f(z_t, y) - f(z_t, null))^2) / rms(f(z_t, null));
  0 means the label is ignored.
- Diffusion-classifier accuracy (Li et al. 2023, "Your diffusion model is secretly a
  zero-shot classifier"): each clip is given the label whose denoising error (the training
  objective's regression error, summed over levels and noise draws) is lowest; the fraction
  of clips given their own label. Chance is 1 / classes; a permuted or ignored label shows."""

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


def _check_label_only(stage: Any) -> int:
    """The number of classes of a stage conditioned on a class label and nothing else (the
    keyframe U-Net, the latent DiT); ValueError for any other stage."""
    num_classes = int(getattr(stage.model_config, "num_classes", 0))
    if num_classes < 1:
        raise ValueError(f"the {stage.name} stage is not class-conditional (model.num_classes=0).")
    if stage.input_shape is not None:
        raise ValueError(f"the {stage.name} stage is conditioned on frames, not only a label.")
    return num_classes


def _label_response(model: Any, batch: int):
    """Jitted fn(z, noise, label) -> the network's float32 output with `label` for all `batch`
    clips (one compile serves every label)."""

    @jax.jit
    def response(z, noise, label):
        return model(z, noise, label=jnp.full((batch,), label, jnp.int32)).astype(jnp.float32)

    return response


def label_effect(
    stage: Any,
    model: Any,
    outputs: np.ndarray,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    seed: int = 0,
) -> dict[float, float]:
    """The label effect (module doc) at each level for clean stage outputs [B, *output_shape];
    NaN where the output with the null label is exactly zero (an untrained adaLN-zero DiT).

    `stage` must be class-conditional with no conditioning channels (the keyframe U-Net, the
    latent DiT); raises ValueError otherwise."""
    num_classes = _check_label_only(stage)
    x = jnp.asarray(outputs, jnp.float32)
    eps = jax.random.normal(jax.random.key(seed), x.shape, x.dtype)
    response = _label_response(model, x.shape[0])
    effects = {}
    for t in levels:
        z, noise = noised_inputs(stage, x, eps, float(t))
        null = response(z, noise, num_classes)  # class num_classes is the null label
        diff2 = sum(jnp.mean((response(z, noise, y) - null) ** 2) for y in range(num_classes))
        rms_null = float(jnp.sqrt(jnp.mean(null**2)))
        effects[float(t)] = float(jnp.sqrt(diff2 / num_classes)) / rms_null if rms_null else np.nan
    return effects


def regression_target(stage: Any, x: jax.Array, eps: jax.Array, noise: jax.Array) -> jax.Array:
    """What the network is trained to output at (x, eps, its noise input): the flow's velocity
    eps - x, or the Gaussian stage's parametrization (eps, x or v) at that log-SNR."""
    from cascade.diffusion import flow, gaussian

    if hasattr(stage, "schedule"):
        p = stage.config.diffusion.parametrization
        return gaussian.target_for(p, x=x, eps=eps, logsnr=noise)
    return flow.flow_target(x, eps)


def diffusion_classifier(
    stage: Any,
    model: Any,
    outputs: np.ndarray,
    labels: np.ndarray,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    draws: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Classify clean stage outputs [B, *output_shape] of known `labels` [B] by the label with
    the lowest denoising error (module doc), with `draws` noise draws per level.

    Returns {"accuracy": float, "chance": 1 / classes, "confusion": [true][predicted] counts}."""
    num_classes = _check_label_only(stage)
    x = jnp.asarray(outputs, jnp.float32)
    response = _label_response(model, x.shape[0])
    per_clip = tuple(range(1, x.ndim))
    total = np.zeros((num_classes, x.shape[0]))
    key = jax.random.key(seed)
    for t in levels:
        for _ in range(draws):
            key, sub = jax.random.split(key)
            eps = jax.random.normal(sub, x.shape, x.dtype)
            z, noise = noised_inputs(stage, x, eps, float(t))
            target = regression_target(stage, x, eps, noise)
            for y in range(num_classes):
                total[y] += np.asarray(jnp.mean((response(z, noise, y) - target) ** 2, per_clip))
    predicted = total.argmin(axis=0)
    labels = np.asarray(labels, np.int64)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "chance": 1.0 / num_classes,
        "confusion": confusion.tolist(),
    }


def trained_label_use(
    workdir: str, *, step: int | None = None, clips: int = 32, levels=DEFAULT_LEVELS
) -> dict[str, Any]:
    """`label_effect` and `diffusion_classifier` of the stage trained in `workdir` (EMA
    weights; the checkpoint of `step` if given) on the first `clips` test clips."""
    from cascade.data import pipeline, views
    from cascade.training.trained import load_trained

    trained = load_trained(workdir, step=step)
    config, stage, model = trained.config, trained.stage, trained.model()
    test = pipeline.test_clips(config.data, clips)
    video = views.clip_view(test["video"], config.view, config.data, np.random.default_rng(0))
    outputs = stage.frames_to_outputs(video)
    return {
        "stage": stage.name,
        "step": trained.step,
        "clips": clips,
        "label_effect": label_effect(stage, model, outputs, levels=levels),
        "diffusion_classifier": diffusion_classifier(
            stage, model, outputs, test["label"], levels=levels
        ),
    }


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
    flags.DEFINE_integer("clips", 32, "Test clips to noise and classify, >= 1.", flag_values=fv)

    def body(args: cli.Args) -> None:
        if args.clips < 1:
            raise cli.UsageError(f"--clips must be >= 1, got {args.clips}.")
        cli.check_trained_workdir(args.workdir, "--workdir")
        try:
            result = trained_label_use(args.workdir, step=args.step, clips=args.clips)
        except ValueError as err:  # not class-conditional, a step that was not kept
            if isinstance(err, cli.user_errors()):
                raise
            raise cli.UsageError(str(err)) from None
        levels = ", ".join(f"t={t}: {e:.4f}" for t, e in result["label_effect"].items())
        classifier = result["diffusion_classifier"]
        print(
            f"{result['stage']} at step {result['step']}, {result['clips']} test clips\n"
            f"  label effect: {levels}\n"
            f"  diffusion-classifier accuracy: {classifier['accuracy']:.3f} "
            f"(chance {classifier['chance']:.3f})"
        )

    return cli.entry(body, fv, __doc__, sys.argv if argv is None else argv, required=("workdir",))


if __name__ == "__main__":
    import sys

    sys.exit(main())
