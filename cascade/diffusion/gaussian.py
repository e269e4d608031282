"""Gaussian diffusion in log-SNR form (VDM, Kingma et al. 2021, appendix; Imagen Video).

Forward process: z_t = alpha_t x + sigma_t eps, alpha^2 = sigmoid(lambda), sigma^2 =
sigmoid(-lambda). Parametrizations of the network output, all derived in `predictions`:
  eps: the noise;  x0: the clean data;  v = alpha eps - sigma x (Salimans & Ho 2022).

Shapes: data / z / model outputs are [B, ...]; log-SNR is [B] (or a scalar) and is
broadcast over the trailing axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cascade.diffusion.schedules import alpha_sigma

PARAMETRIZATIONS = ("eps", "x0", "v")
WEIGHTINGS = ("eps_mse", "v_mse", "snr_trunc", "x0_mse")


def bcast(a: jax.Array, x: jax.Array) -> jax.Array:
    """Reshape a per-example array [B] (or scalar) so it broadcasts against x [B, ...]."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise ValueError naming `name` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {list(allowed)}")


def q_sample(x: jax.Array, *, eps: jax.Array, logsnr: jax.Array) -> jax.Array:
    """z_t = alpha x + sigma eps: a draw from q(z_t | x) given standard noise eps [B, ...]."""
    alpha, sigma = alpha_sigma(bcast(logsnr, x))
    return alpha * x + sigma * eps


def posterior_mean_var(
    z_t: jax.Array, x: jax.Array, *, logsnr_t: jax.Array, logsnr_s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of q(z_s | z_t, x) for s < t (so lambda_s > lambda_t).

    With r = SNR_t / SNR_s = exp(lambda_t - lambda_s) (VDM appendix A):
      mean = r (alpha_s / alpha_t) z_t + (1 - r) alpha_s x,   var = (1 - r) sigma_s^2.
    Returns (mean [B,...], var broadcastable to [B,...]).
    """
    lt, ls = bcast(logsnr_t, z_t), bcast(logsnr_s, z_t)
    r = jnp.exp(lt - ls)
    one_minus_r = -jnp.expm1(lt - ls)
    # alpha_s / alpha_t computed in log space (alpha_t is ~5e-5 at lambda = -20).
    alpha_ratio = jnp.exp(0.5 * (jax.nn.log_sigmoid(ls) - jax.nn.log_sigmoid(lt)))
    alpha_s = jnp.sqrt(jax.nn.sigmoid(ls))
    mean = r * alpha_ratio * z_t + one_minus_r * alpha_s * x
    var = one_minus_r * jax.nn.sigmoid(-ls)
    return mean, var


def ancestral_log_variance(
    *, logsnr_t: jax.Array, logsnr_s: jax.Array, gamma: float | jax.Array
) -> jax.Array:
    """log of VDM's interpolated sampler variance (sigma~^2_{s|t})^(1-gamma) (sigma^2_{t|s})^gamma.

    sigma~^2_{s|t} = (1 - r) sigma_s^2 is the posterior variance (gamma = 0, DDPM's lower
    bound) and sigma^2_{t|s} = (1 - r) sigma_t^2 the forward variance (gamma = 1, upper).
    """
    log_one_minus_r = jnp.log(-jnp.expm1(logsnr_t - logsnr_s))
    return (
        log_one_minus_r
        + (1.0 - gamma) * jax.nn.log_sigmoid(-logsnr_s)
        + gamma * jax.nn.log_sigmoid(-logsnr_t)
    )


def predictions(
    model_out: jax.Array,
    z: jax.Array,
    *,
    logsnr: jax.Array,
    parametrization: str,
    clip_x0: float | bool | tuple[jax.Array, jax.Array] | None = None,
) -> dict[str, jax.Array]:
    """All three views {"x0", "eps", "v"} of a network output in the given parametrization.

    This is the single place where eps / x0 / v are converted into one another:
      from eps: x0 = (z - sigma eps) / alpha
      from x0:  eps = (z - alpha x0) / sigma
      from v:   x0 = alpha z - sigma v,  eps = sigma z + alpha v
      and always v = alpha eps - sigma x0.
    clip_x0: None/False (no clipping), True (clip to [-1, 1]), a float c (clip to [-c, c]) or
    a pair (lo, hi) of arrays broadcastable to x0 (a residual's bounds: `SuperResolutionStage`);
    when clipping, eps and v are recomputed from the clipped x0 so all three stay consistent
    with z (what the samplers need). All arrays [B, ...]; logsnr [B] or scalar.
    """
    check_choice("parametrization", parametrization, PARAMETRIZATIONS)
    alpha, sigma = alpha_sigma(bcast(logsnr, z))
    if parametrization == "eps":
        eps = model_out
        x0 = (z - sigma * eps) / alpha
    elif parametrization == "x0":
        x0 = model_out
        eps = (z - alpha * x0) / sigma
    else:
        x0 = alpha * z - sigma * model_out
        eps = sigma * z + alpha * model_out
    if clip_x0 is not None and clip_x0 is not False:
        if isinstance(clip_x0, tuple):
            x0 = jnp.clip(x0, *clip_x0)
        else:
            c = 1.0 if clip_x0 is True else float(clip_x0)
            x0 = jnp.clip(x0, -c, c)
        eps = (z - alpha * x0) / sigma
    v = alpha * eps - sigma * x0
    if parametrization == "v" and (clip_x0 is None or clip_x0 is False):
        v = model_out  # exact: no round trip through z
    return {"x0": x0, "eps": eps, "v": v}


def target_for(
    parametrization: str, *, x: jax.Array, eps: jax.Array, logsnr: jax.Array
) -> jax.Array:
    """Regression target for this parametrization: eps, x, or v = alpha eps - sigma x."""
    check_choice("parametrization", parametrization, PARAMETRIZATIONS)
    if parametrization == "eps":
        return eps
    if parametrization == "x0":
        return x
    alpha, sigma = alpha_sigma(bcast(logsnr, x))
    return alpha * eps - sigma * x


def _mean_per_example(a: jax.Array) -> jax.Array:
    return jnp.mean(a.reshape(a.shape[0], -1), axis=1)


def diffusion_loss(
    model_out: jax.Array,
    *,
    x: jax.Array,
    eps: jax.Array,
    logsnr: jax.Array,
    parametrization: str,
    weighting: str,
) -> jax.Array:
    """Per-example loss [B] (mean over the non-batch axes) for z_t = q_sample(x, eps, logsnr).

    Weightings, written in x-space as w(lambda) ||x - x^||^2 (using ||eps - eps^||^2 =
    SNR ||x - x^||^2 and ||v - v^||^2 = (1 + SNR) ||x - x^||^2 at fixed z):
      eps_mse:   SNR               (DDPM's simple loss)
      v_mse:     1 + SNR           (Salimans & Ho's "SNR+1")
      snr_trunc: max(SNR, 1)       (Salimans & Ho's truncated SNR = max(x-MSE, eps-MSE))
      x0_mse:    1
    The model output may be in any parametrization: it is converted with `predictions`, and
    each loss is computed in the space where it is numerically natural.
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    z = q_sample(x, eps=eps, logsnr=logsnr)
    pred = predictions(model_out, z, logsnr=logsnr, parametrization=parametrization)
    if weighting == "eps_mse":
        return _mean_per_example(jnp.square(pred["eps"] - eps))
    if weighting == "v_mse":
        return _mean_per_example(
            jnp.square(pred["v"] - target_for("v", x=x, eps=eps, logsnr=logsnr))
        )
    x_mse = _mean_per_example(jnp.square(pred["x0"] - x))
    if weighting == "x0_mse":
        return x_mse
    eps_mse = _mean_per_example(jnp.square(pred["eps"] - eps))
    # max(SNR, 1) * x-MSE: eps-MSE where SNR > 1, x-MSE otherwise (no 1/alpha blow-up).
    return jnp.where(jnp.broadcast_to(logsnr, x_mse.shape) > 0, eps_mse, x_mse)
