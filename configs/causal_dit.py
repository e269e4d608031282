"""Causal latent DiT: Diffusion Forcing (a flow time per latent frame) with block-causal
attention over chunks of latent frames, sampled chunk by chunk with a KV cache.

    python -m cascade.main --config=configs/causal_dit.py:quick --workdir=W \
        --config.vae.workdir=WORKDIR_OF_A_TRAINED_VIDEO_VAE
    python -m cascade.main --config=configs/causal_dit.py:quick --workdir=W --mode=sample \
        --config.vae.workdir=... --config.causal.length=8   # 8 x the trained length

Presets as configs/latent_dit.py: default, tiny (tests), quick (on the `video_vae.py:quick`
latents, 5 x 8 x 8 x 4: 5 chunks of one latent frame), bench.
"""

import ml_collections

from cascade import configs
from cascade.models.dit import DiTConfig


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return configs.apply_preset(_config(), arg, PRESETS, file="configs/causal_dit.py")


def _config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stage = "latent_dit"  # with a `causal` section: cascade.stages.causal_dit
    config.seed = 0
    config.data = configs.data_section("moving_digits")
    config.view = configs.view_section(frames=17, resolution=64, frame_stride=1)
    config.vae = configs.vae_section("workdirs/video_vae")
    config.model = configs.model_section(
        DiTConfig,
        in_channels=4,
        patch_size=(1, 2, 2),
        hidden_size=384,
        depth=12,
        num_heads=6,
        num_classes=10,
        causal_chunk=1,  # latent frames per chunk: 17 frames -> 5 latents -> 5 chunks
    )
    config.causal = configs.causal_section(window=4)
    config.flow = configs.flow_section()
    config.sample = configs.flow_sample_section(steps=16)  # per chunk
    config.train = configs.train_section()
    config.train.update(learning_rate=3e-4)
    config.mesh = configs.mesh_section()
    # Only cascade.bench reads this: the DiT is timed alone on latents of this shape.
    config.bench = ml_collections.ConfigDict({"latent_shape": (5, 16, 16, 4)})
    return config


def _default(config):
    pass


def _tiny(config):
    config.data.update(num_train=16, num_test=8, frames=8, resolution=16)
    config.view.update(frames=5, resolution=16)  # 2 latent frames: 2 chunks
    config.model.update(hidden_size=32, depth=2, num_heads=2, time_embed_dim=32)
    config.causal.update(window=1, length=3)
    config.sample.steps = 4
    configs.tiny_training(config.train, learning_rate=1e-3)


def _quick(config):
    config.data.update(num_train=512, num_test=64, frames=17, resolution=32)
    config.view.update(frames=17, resolution=32)
    config.model.update(hidden_size=192, depth=6, num_heads=6)
    configs.quick_training(config.train, steps=1500, learning_rate=5e-4)


def _bench(config):
    config.model.update(
        hidden_size=384, depth=10, num_heads=6, num_classes=0, attention_impl="einsum"
    )
    config.flow.label_dropout = 0.0  # unconditional: no labels to drop
    config.train.batch_size = 2


PRESETS = {"default": _default, "tiny": _tiny, "quick": _quick, "bench": _bench}
