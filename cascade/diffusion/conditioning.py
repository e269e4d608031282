"""Sampling given some frames (VDM sec. 3.1): the replacement method and reconstruction guidance.

A clip x = [x_a, x_b] whose known part x_a sits where a boolean `mask` is True (the first c
frames, every k-th frame, ...). Both methods run the ordinary sampler over the whole clip:

  replacement     before every step, z_t^a <- alpha_t x_a + sigma_t eps (a fresh forward-diffused
                  copy of the known frames), so the model sees x_a at the current noise level;
  reconstruction  the same replacement, plus the model's x^_b corrected by VDM eq. 7,
                  x~_b = x^_b - (w_r alpha_t / 2) grad_{z_t^b} ||x_a - x^_a(z_t)||^2,
                  the gradient taken with respect to z_t only (`guidance.reconstruction_guidance`).

Either way the returned clip holds x_a exactly at the known positions. The spatial-SR form of
guidance (error between a low-resolution clip and the box-downsampled x^) is
`spatial_reconstruction_guidance`. Flow matching (the latent DiT) has the replacement method
(`flow_sample_given`): the known part of z_t set to (1 - t) x_a + t eps before every step. All
functions are pure JAX: jit them with the shapes fixed.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from cascade.diffusion import flow, gaussian, guidance, samplers
from cascade.diffusion.schedules import step_times

METHODS = ("replacement", "reconstruction")


def replace_known(
    z: jax.Array, x_known: jax.Array, mask: jax.Array, *, logsnr: jax.Array, noise: jax.Array
) -> jax.Array:
    """z [B,T,...] with its known positions (`mask` True, broadcastable to z) set to a draw
    of q(z_t | x_known) = alpha_t x_known + sigma_t noise at log-SNR `logsnr` [B]."""
    return jnp.where(mask, gaussian.q_sample(x_known, eps=noise, logsnr=logsnr), z)


def box_downsample(x: jax.Array, factor: int) -> jax.Array:
    """Spatial area filter: mean over factor x factor pixel blocks of x [B,T,H,W,C]."""
    b, t, h, w, c = x.shape
    if h % factor or w % factor:
        raise ValueError(f"box_downsample: {h}x{w} frames do not divide by factor {factor}")
    x = x.reshape(b, t, h // factor, factor, w // factor, factor, c)
    return jnp.mean(x, axis=(3, 5))


def spatial_reconstruction_guidance(
    denoise_fn: guidance.DenoiseFn,
    low_res: jax.Array,
    w_r: float | jax.Array,
    *,
    high_res_shape: tuple[int, ...],
    parametrization: str,
) -> guidance.DenoiseFn:
    """VDM reconstruction guidance for spatial super-resolution, as a denoiser wrapper.

    x~ = x^ - (w_r alpha_t / 2) grad_{z_t} ||low_res - box(x^(z_t))||^2, with `box` the area
    downsampling from `high_res_shape` [B,T,H,W,C] to low_res [B,T,h,w,C] (H / h = W / w an
    integer). The correction applies to every high-resolution position (none is known).
    """
    factor = high_res_shape[2] // low_res.shape[2]
    if (
        low_res.shape[:2] != tuple(high_res_shape[:2])
        or low_res.shape[-1] != high_res_shape[-1]
        or factor * low_res.shape[2] != high_res_shape[2]
        or factor * low_res.shape[3] != high_res_shape[3]
    ):
        raise ValueError(
            f"low-res clip {tuple(low_res.shape)} is not an integer box downsampling of "
            f"the high-res shape {tuple(high_res_shape)} [B,T,H,W,C]"
        )
    return guidance.reconstruction_guidance(
        denoise_fn,
        low_res,
        w_r,
        parametrization=parametrization,
        downsample=lambda x: box_downsample(x, factor),
    )


def sample_given(
    denoise_fn: guidance.DenoiseFn,
    x_known: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    *,
    method: str,
    w_r: float | jax.Array,
    steps: int | jax.Array,
    parametrization: str,
    **sampler_kwargs: Any,
) -> jax.Array:
    """A clip [B,T,...] (the shape of `x_known`) whose positions where `mask` is True are x_known.

    mask: bool, broadcastable to x_known (e.g. [1,T,1,1,1] or [B,T,1,1,1]); the values of
    x_known elsewhere are ignored. method: "replacement" or "reconstruction" (w_r is unused by
    the former; w_r = 0 makes the latter the former). `denoise_fn(z, logsnr [B])` is the
    network with everything else closed over (classifier-free guidance included: the guided
    prediction is the one corrected). `sampler_kwargs` go to `samplers.sample` (sampler, eta,
    gamma, schedule, clip_x0). The replacement noise of step i is drawn from a key derived
    from `key`, fresh at every step and independent of the sampler's own noise.
    """
    gaussian.check_choice("method", method, METHODS)
    k_sample, k_replace = jax.random.split(key)
    mask = jnp.asarray(mask, bool)

    def replace_fn(z, logsnr, i):
        noise = jax.random.normal(jax.random.fold_in(k_replace, i), z.shape, z.dtype)
        return replace_known(z, x_known.astype(z.dtype), mask, logsnr=logsnr, noise=noise)

    if method == "reconstruction":
        denoise_fn = guidance.reconstruction_guidance(
            denoise_fn, x_known, w_r, parametrization=parametrization, mask=mask
        )
    x = samplers.sample(
        denoise_fn,
        x_known.shape,
        k_sample,
        steps=steps,
        parametrization=parametrization,
        replace_fn=replace_fn,
        **sampler_kwargs,
    )
    # The sampler's last x^ of the known part is the network's (or a v/eps round trip of
    # x_known): put the given frames back bit for bit.
    return jnp.where(mask, x_known.astype(x.dtype), x)


FLOW_METHODS = ("replacement",)


def flow_sample_given(
    velocity_fn: flow.VelocityFn,
    x_known: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    *,
    steps: int,
    shift: float = 1.0,
    sampler: str = "euler",
) -> jax.Array:
    """Flow-matching sample [B,T,...] (the shape of `x_known`) whose positions where `mask`
    (bool, broadcastable) is True are x_known: the replacement method on the flow path.

    Before every step the known part of z_t is set to the forward interpolation
    (1 - t) x_known + t eps (fresh eps each step, `flow.flow_interpolate`); the step is
    `flow.euler_step` or `flow.heun_step` on the same shifted grid as the plain solvers, and
    the known positions of the result are x_known exactly.
    """
    if sampler not in ("euler", "heun"):
        raise ValueError(f"sampler must be euler or heun, got {sampler!r}")
    step = flow.euler_step if sampler == "euler" else flow.heun_step
    k_init, k_replace = jax.random.split(key)
    mask = jnp.asarray(mask, bool)
    x_known = x_known.astype(jnp.float32)
    z = jax.random.normal(k_init, x_known.shape, jnp.float32)
    n = jnp.asarray(steps)

    def body(i, z):
        u_t, u_s = step_times(i, n, z.dtype)
        t, t_next = flow.shift_time(u_t, shift), flow.shift_time(u_s, shift)
        eps = jax.random.normal(jax.random.fold_in(k_replace, i), z.shape, z.dtype)
        z = jnp.where(mask, flow.flow_interpolate(x_known, eps=eps, t=t), z)
        return step(velocity_fn, z, t=t, t_next=t_next).astype(z.dtype)

    z = jax.lax.fori_loop(0, steps, body, z)
    return jnp.where(mask, x_known, z)
