"""Sampling: trained stages chained into videos.

Layer: imports training and everything below it; never evaluation or the entry points.

  runners.py   the cascade runner (keyframes -> temporal SR -> spatial SR), the single-stage
               runner (latent DiT -> VAE decode), and one stage's `--mode=sample`
  conditional.py  VDM conditional sampling of any stage with `sample_given` (U-Net: replacement
               or reconstruction guidance; latent DiT: replacement of latent frames), frame
               prediction, autoregressive extension (long clips through the chunked VAE)
  rollout.py   long videos from a causal latent DiT: one jitted chunk step, a KV cache
"""
