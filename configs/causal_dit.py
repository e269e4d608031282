"""Causal latent DiT: Diffusion Forcing (a flow time per latent frame) with block-causal
attention over chunks of latent frames, sampled chunk by chunk with a KV cache.

    python -m cascade.main --config=configs/causal_dit.py:quick --workdir=W \
        --config.vae.workdir=WORKDIR_OF_A_TRAINED_VIDEO_VAE
    python -m cascade.main --config=configs/causal_dit.py:quick --workdir=W --mode=sample \
        --config.vae.workdir=... --config.causal.length=8   # 8 x the trained length

Each preset is configs/latent_dit.py's preset of the same name (default, tiny for tests,
quick on the `video_vae.py:quick` latents 5 x 8 x 8 x 4, bench) plus the `causal` section and
the overrides below: the two DiTs differ only in what makes this one causal.
"""

import ml_collections

from cascade import configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "default"
    if name not in PRESETS:  # named here, or the error would blame latent_dit.py
        raise configs.ConfigError(
            f"configs/causal_dit.py: unknown preset {name!r}; available presets: "
            f"{', '.join(sorted(PRESETS))}."
        )
    config = configs.load(f"latent_dit:{name}")
    config.unlock()
    # stage stays "latent_dit": the `causal` section selects cascade.stages.causal_dit.
    config.model.causal_chunk = 1  # latent frames per chunk: 17 frames -> 5 latents -> 5 chunks
    config.causal = configs.causal_section(window=4)
    config.sample.steps = 16  # per chunk
    PRESETS[name](config)
    config.lock()
    return config


def _default(config):
    pass


def _tiny(config):
    config.causal.update(window=1, length=3)  # 2 latent frames: 2 chunks
    config.sample.steps = 4


PRESETS = {"default": _default, "tiny": _tiny, "quick": _default, "bench": _default}
