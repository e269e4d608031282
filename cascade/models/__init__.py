"""Networks (Flax NNX): pure functions of parameters and inputs, randomness passed in.

Layer: imports nothing else of cascade (no configs: each model has its own dataclass
config, which `cascade.configs.model_section` turns into a config section).

  ops.py                    stateless ops shared by all networks (COMPUTE_DTYPES,
                            sinusoidal embedding, dropout, RMS norm, NHWC conv, upsampling)
  layers.py                 U-Net building blocks (param init, Dense, GroupNorm, convs, ResBlock)
  attention.py              U-Net spatial/temporal attention, the DiT's einsum attention kernel
  unet3d.py                 the VDM-style 3D U-Net (keyframe and super-resolution stages)
  causal_blocks.py, vae.py  the causal video VAE and its chunked streaming path
  dit.py                    the latent DiT: full 3D attention, or block-causal over latent
                            frames (`causal_chunk`) with per-frame noise levels
  dit_config.py, dit_ops.py its config dataclass; 3D RoPE, block-causal mask, adaLN ops
  kv_cache.py               the sliding key/value cache of a block-causal DiT's rollout
  av_dit.py                 the joint audio-video DiT (video patches + log-mel audio tokens)
  i3d.py                    the Kinetics-400 I3D feature network for FVD
  audio_frontend.py         fixed log-mel audio front end and its Griffin-Lim inverse (numpy)
"""
