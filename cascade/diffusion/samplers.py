"""Samplers for Gaussian diffusion in log-SNR: ancestral (DDPM, VDM variance) and DDIM.

`denoise_fn(z [B,...], logsnr [B]) -> model_out [B,...]` with all conditioning closed over;
the output is read through `gaussian.predictions` in the given parametrization, so guidance
wrappers (guidance.py) compose with every sampler.

The time grid is u_i = i / steps, lambda_i = schedule(u_i), walked from u = 1 to u = 0. The
whole loop is one `lax.fori_loop` whose body computes its own times from the step index, so
`steps` may be a Python int or a traced integer: `jax.jit(partial(sample, fn, shape))` then
compiles one loop body for every number of steps.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from cascade.diffusion import gaussian
from cascade.diffusion.schedules import Schedule, alpha_sigma, logsnr_cosine, step_times

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]
ReplaceFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
SAMPLERS = ("ddpm", "ddim")


def ddim_step(z: jax.Array, pred: dict[str, jax.Array], *, logsnr_s: jax.Array) -> jax.Array:
    """Deterministic DDIM update to log-SNR lambda_s: z_s = alpha_s x^ + sigma_s eps^.

    Works in both directions (s earlier or later than t): the inverse step uses the same form.
    """
    alpha_s, sigma_s = alpha_sigma(gaussian.bcast(logsnr_s, z))
    return alpha_s * pred["x0"] + sigma_s * pred["eps"]


def ddim_eta_step(
    z: jax.Array,
    pred: dict[str, jax.Array],
    *,
    logsnr_t: jax.Array,
    logsnr_s: jax.Array,
    eta: float | jax.Array,
    noise: jax.Array,
) -> jax.Array:
    """DDIM (Song et al. 2021) with stochasticity eta from lambda_t to lambda_s > lambda_t.

    c^2 = eta^2 (1 - r) sigma_s^2 with r = SNR_t / SNR_s (eta = 1: DDPM's posterior variance);
    z_s = alpha_s x^ + sqrt(sigma_s^2 - c^2) eps^ + c noise.
    """
    ls = gaussian.bcast(logsnr_s, z)
    lt = gaussian.bcast(logsnr_t, z)
    alpha_s, sigma_s = alpha_sigma(ls)
    c2 = jnp.square(eta) * (-jnp.expm1(lt - ls)) * jnp.square(sigma_s)
    return (
        alpha_s * pred["x0"]
        + jnp.sqrt(jnp.square(sigma_s) - c2) * pred["eps"]
        + (jnp.sqrt(c2) * noise)
    )


def ddpm_step(
    z: jax.Array,
    pred: dict[str, jax.Array],
    *,
    logsnr_t: jax.Array,
    logsnr_s: jax.Array,
    gamma: float | jax.Array,
    noise: jax.Array,
) -> jax.Array:
    """Ancestral step: posterior mean of q(z_s | z_t, x = x^) plus noise with VDM's variance
    (sigma~^2_{s|t})^(1 - gamma) (sigma^2_{t|s})^gamma."""
    mean, _ = gaussian.posterior_mean_var(z, pred["x0"], logsnr_t=logsnr_t, logsnr_s=logsnr_s)
    log_var = gaussian.ancestral_log_variance(
        logsnr_t=gaussian.bcast(logsnr_t, z), logsnr_s=gaussian.bcast(logsnr_s, z), gamma=gamma
    )
    return mean + jnp.exp(0.5 * log_var) * noise


def sample(
    denoise_fn: DenoiseFn,
    shape: tuple[int, ...],
    key: jax.Array,
    *,
    steps: int | jax.Array,
    sampler: str = "ddpm",
    eta: float = 0.0,
    schedule: Schedule = logsnr_cosine,
    parametrization: str = "v",
    gamma: float = 0.3,
    clip_x0: bool | float = True,
    z_init: jax.Array | None = None,
    final_x0: bool = True,
    dtype: jnp.dtype = jnp.float32,
    replace_fn: ReplaceFn | None = None,
) -> jax.Array:
    """Generate x [shape] from noise with `steps` denoiser calls.

    sampler: "ddpm" (ancestral, VDM variance interpolation `gamma`) or "ddim" (`eta`; 0 is the
    deterministic probability-flow discretisation). clip_x0: clip x^ to [-1, 1] (or [-c, c])
    before each update. z_init: starting noise [shape] (else drawn from `key`, in `dtype`).
    final_x0: the last step returns the model's x^ (VDM / Imagen practice); if False it
    returns z at t = 0 (lambda = lambda_max), which is what `ddim_invert` inverts exactly.
    replace_fn(z_t, lambda_t [B], step index) -> z_t: applied to z before each denoiser call
    and update (conditioning by replacement, `cascade.diffusion.conditioning`); None: no-op.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {list(SAMPLERS)}")
    gaussian.check_choice("parametrization", parametrization, gaussian.PARAMETRIZATIONS)
    k_init, k_loop = jax.random.split(key)
    z = jax.random.normal(k_init, shape, dtype) if z_init is None else z_init
    if z.shape != tuple(shape):
        raise ValueError(f"z_init shape {z.shape} != requested shape {tuple(shape)}")
    batch = z.shape[0]
    n = jnp.asarray(steps)
    clip = clip_x0 if clip_x0 is not False else None

    def body(i, z):
        u_t, u_s = step_times(i, n, z.dtype)
        lt = jnp.full((batch,), schedule(u_t), z.dtype)
        ls = jnp.full((batch,), schedule(u_s), z.dtype)
        if replace_fn is not None:
            z = replace_fn(z, lt, i).astype(z.dtype)
        pred = gaussian.predictions(
            denoise_fn(z, lt), z, logsnr=lt, parametrization=parametrization, clip_x0=clip
        )
        noise = jax.random.normal(jax.random.fold_in(k_loop, i), z.shape, z.dtype)
        if sampler == "ddpm":
            z_s = ddpm_step(z, pred, logsnr_t=lt, logsnr_s=ls, gamma=gamma, noise=noise)
        else:
            z_s = ddim_eta_step(z, pred, logsnr_t=lt, logsnr_s=ls, eta=eta, noise=noise)
        if final_x0:
            z_s = jnp.where(i == n - 1, pred["x0"].astype(z.dtype), z_s)
        return z_s.astype(z.dtype)

    # A Python step count gives a static trip count: the loop lowers to a scan, whose
    # FLOPs cost accounting can count; a traced count still compiles one loop for all.
    return jax.lax.fori_loop(0, steps if isinstance(steps, int) else n, body, z)


def ddim_invert(
    denoise_fn: DenoiseFn,
    x: jax.Array,
    *,
    steps: int | jax.Array,
    schedule: Schedule = logsnr_cosine,
    parametrization: str = "v",
    clip_x0: bool | float = False,
) -> jax.Array:
    """Deterministic DDIM encoding (eta = 0): walk x = z_0 from u = 0 up to u = 1.

    Each step u_i -> u_{i+1} evaluates the model at (z_{u_i}, lambda_i) and applies
    z_{i+1} = alpha_{i+1} x^ + sigma_{i+1} eps^. Inverts `sample(..., sampler="ddim",
    eta=0, final_x0=False)` up to the O(1/steps) discretisation error (exactly when the
    denoiser's x^ does not depend on z). x: [B, ...]; returns z_1 [B, ...].
    """
    gaussian.check_choice("parametrization", parametrization, gaussian.PARAMETRIZATIONS)
    batch = x.shape[0]
    n = jnp.asarray(steps)
    clip = clip_x0 if clip_x0 is not False else None

    def body(i, z):
        u_s, u_t = step_times(n - 1 - i, n, z.dtype)  # the sampling grid, walked upwards
        lt = jnp.full((batch,), schedule(u_t), z.dtype)
        ls = jnp.full((batch,), schedule(u_s), z.dtype)
        pred = gaussian.predictions(
            denoise_fn(z, lt), z, logsnr=lt, parametrization=parametrization, clip_x0=clip
        )
        return ddim_step(z, pred, logsnr_s=ls).astype(z.dtype)

    return jax.lax.fori_loop(0, n, body, x)
