"""cascade: a JAX research framework for video diffusion.

Historical cascades (base 3D U-Net -> temporal SR -> spatial SR) and the modern
single-stage latent DiT (causal video VAE + flow-matching DiT + distillation),
trained from config files on the same data and measured with the same metrics.
"""

__version__ = "0.1.0"
