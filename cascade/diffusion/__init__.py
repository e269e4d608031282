"""Diffusion math: pure JAX functions, no networks, no configs beyond their errors.

Layer: imports `cascade.configs` only. Functions where two log-SNRs or times could be
swapped take them as keyword-only arguments.

  schedules.py  log-SNR schedules (cosine, shifted) and alpha/sigma
  gaussian.py   forward process, posterior, parametrizations (eps/x0/v), losses
  samplers.py   ancestral (DDPM) and DDIM samplers on one time grid
  guidance.py   classifier-free guidance and VDM reconstruction guidance
  flow.py       rectified-flow / flow-matching interpolation, time sampling, ODE solvers
  distill.py    progressive-distillation targets, losses and round arithmetic
  conditioning.py  VDM conditional sampling: replacement and reconstruction guidance
                (Gaussian), replacement of given latent frames (flow)
  rollout.py    chunk-by-chunk flow sampling of a block-causal DiT with a KV cache
"""
