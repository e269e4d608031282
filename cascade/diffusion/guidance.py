"""Guidance: classifier-free guidance (Ho & Salimans 2022) and VDM reconstruction guidance.

Classifier-free convention (Imagen / VDM): eps~ = (1 + w) eps_c - w eps_u, so w = 0 is the
plain conditional model and w = -1 the unconditional one. Training drops labels to a
"null" class with probability p (`drop_labels`).

Because eps, x0, v (and a flow velocity) are affine functions of the network output with
coefficients that depend only on (z, lambda), and the guidance weights (1 + w, -w) sum to 1,
guiding in eps space and guiding the raw output are the same thing; `cfg_denoise_fn` can
still do it literally in eps space when given a parametrization.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from cascade.diffusion import gaussian
from cascade.diffusion.schedules import alpha_sigma

ModelFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


def drop_labels(labels: jax.Array, p: float, key: jax.Array, null_label: int) -> jax.Array:
    """Replace each label [B] by `null_label` with probability p (classifier-free training)."""
    drop = jax.random.bernoulli(key, p, labels.shape)
    return jnp.where(drop, jnp.asarray(null_label, labels.dtype), labels)


def cfg_combine(out_cond: jax.Array, out_uncond: jax.Array, w: float | jax.Array) -> jax.Array:
    """(1 + w) out_c - w out_u; w a scalar or per-example [B]."""
    w = gaussian.bcast(jnp.asarray(w, out_cond.dtype), out_cond)
    return out_cond + w * (out_cond - out_uncond)


def cfg_denoise_fn(
    model_fn: ModelFn,
    w: float | jax.Array,
    null_label: int,
    label: jax.Array,
    *,
    parametrization: str | None = None,
) -> DenoiseFn:
    """Guided denoiser (z [B,...], logsnr_or_t [B]) -> output, from model_fn(z, logsnr, label).
    A level per frame, [B, T] (the causal DiT's flow times), is passed through as is.

    One batched network call on [2B, ...] (conditional half, then null-label half). With a
    `parametrization` ("eps" | "x0" | "v") the two outputs are converted to eps, combined and
    converted back (mathematically the same as combining raw outputs, see module docstring);
    with None the raw outputs are combined (also right for flow-matching velocities).
    """
    label = jnp.asarray(label)
    null = jnp.full_like(label, null_label)

    def guided(z: jax.Array, logsnr: jax.Array) -> jax.Array:
        b = z.shape[0]
        level = logsnr if jnp.ndim(logsnr) > 1 else jnp.broadcast_to(logsnr, (b,))
        out = model_fn(
            jnp.concatenate([z, z]),
            jnp.concatenate([level, level]),
            jnp.concatenate([label, null]),
        )
        out_c, out_u = out[:b], out[b:]
        if parametrization is None:
            return cfg_combine(out_c, out_u, w)
        eps_c = gaussian.predictions(out_c, z, logsnr=level, parametrization=parametrization)["eps"]
        eps_u = gaussian.predictions(out_u, z, logsnr=level, parametrization=parametrization)["eps"]
        pred = gaussian.predictions(
            cfg_combine(eps_c, eps_u, w), z, logsnr=level, parametrization="eps"
        )
        return pred[parametrization]

    return guided


def frame_mask(num_frames: int, known: list[int] | tuple[int, ...], ndim: int = 5) -> jax.Array:
    """Boolean mask [1, T, 1, ..., 1] (ndim axes) that is True on the known frame indices."""
    m = jnp.zeros((num_frames,), bool).at[jnp.asarray(known, jnp.int32)].set(True)
    return m.reshape((1, num_frames) + (1,) * (ndim - 2))


def reconstruction_guidance(
    denoise_fn: DenoiseFn,
    x_a: jax.Array,
    w_r: float | jax.Array,
    *,
    parametrization: str,
    mask: jax.Array | None = None,
    downsample: Callable[[jax.Array], jax.Array] | None = None,
    replace_known: bool = True,
) -> DenoiseFn:
    """VDM reconstruction guidance (Ho et al. 2022, eq. 7) as a denoiser wrapper.

      x~_b = x^_b - (w_r alpha_t / 2) grad_{z_b} || x_a - A(x^(z_t)) ||^2

    Temporal conditioning (A = identity, `downsample=None`): x_a [B,...] holds the known
    frames at the positions where `mask` (bool, broadcastable to z) is True; values elsewhere
    are ignored. The correction is applied to the unknown positions b; with
    `replace_known` the known positions of x^ are set to x_a, so the samplers keep z_a on
    q(z_s | x_a) (the "replacement" part of VDM's method).

    Spatial super-resolution (`downsample` given): x_a is the low-resolution video, A the
    downsampling operator (e.g. an area filter), the error is taken on A(x^) and the
    correction applies to all of z (`mask`, if given, selects known low-res positions).

    Returns a denoiser (z, logsnr [B]) -> output in the same `parametrization`, so it plugs
    into every sampler. Costs one forward and one backward pass of the network per call.
    """
    gaussian.check_choice("parametrization", parametrization, gaussian.PARAMETRIZATIONS)
    observe = (lambda x: x) if downsample is None else downsample

    def guided(z: jax.Array, logsnr: jax.Array) -> jax.Array:
        def err(z_in):
            x_hat = gaussian.predictions(
                denoise_fn(z_in, logsnr), z_in, logsnr=logsnr, parametrization=parametrization
            )["x0"]
            resid = x_a - observe(x_hat)
            if mask is not None:
                resid = jnp.where(mask, resid, 0.0)
            # Sum over examples: they are independent, so grad of the sum = per-example grads.
            return jnp.sum(jnp.square(resid)), x_hat

        grad, x_hat = jax.grad(err, has_aux=True)(z)
        alpha, _ = alpha_sigma(gaussian.bcast(logsnr, z))
        x_new = x_hat - 0.5 * gaussian.bcast(jnp.asarray(w_r, z.dtype), z) * alpha * grad
        if downsample is None and mask is not None:
            x_known = x_a if replace_known else x_hat
            x_new = jnp.where(mask, x_known, x_new)
        return gaussian.predictions(x_new, z, logsnr=logsnr, parametrization="x0")[parametrization]

    return guided
