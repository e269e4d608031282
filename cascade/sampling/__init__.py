"""Sampling: trained stages chained into videos.

Layer: imports training and everything below it; never evaluation or the entry points.

  runners.py   the cascade runner (keyframes -> temporal SR -> spatial SR), the single-stage
               runner (latent DiT -> VAE decode), and one stage's `--mode=sample`
  conditional.py  VDM conditional sampling of a Gaussian stage: given frames by replacement
               or reconstruction guidance, frame prediction, autoregressive extension
"""
