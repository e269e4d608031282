"""The models of experiments/long_video.py per data set and training seed: a video VAE shared
by a bidirectional and a causal latent DiT, and the cascade's keyframe stage, all on the same
T-frame view, configured from the stage presets and trained (or reused) in workdirs named by
config hash.
"""

from __future__ import annotations

from typing import Any

from experiments import common

LABELS = {"video_vae": "lv_vae", "latent_dit": "lv_dit", "causal_dit": "lv_causal"}
LABELS["keyframes"] = "lv_keyframes"  # workdir label of each model (+ _<dataset>-<hash>)


def model_configs(
    dataset: str, p: dict[str, Any], data_dir, workdirs, train_seed: int = 0
) -> dict[str, Any]:
    """The configs of the VAE, both DiTs and the keyframe stage on `dataset` at
    `train_seed` under the experiment preset's settings `p` (names: video_vae, latent_dit,
    causal_dit, keyframes; the DiTs read the VAE's workdir under `workdirs`, named by its hash:
    nothing is trained here)."""
    rgb = dataset == "bouncing_shapes"
    view = {"view.frames": p["frames"], "view.resolution": p["resolution"], "view.frame_stride": 1}
    view["view.channels"] = 3 if rgb else 1
    base = {"seed": train_seed, "data.name": dataset, "train.batch_size": p["batch_size"]}

    def config(name: str, overrides: dict[str, Any]):
        c = common.stage_config(name, p["base"], data_dir, {**base, **overrides}, p["data"])
        common.set_steps(c, p["train_steps"][name])
        return c

    configs = {}
    vae = {**view, **_model(p["models"]["video_vae"]), "model.in_channels": view["view.channels"]}
    configs["video_vae"] = config("video_vae", vae)
    vae_workdir = common.workdir_for(workdirs, f"lv_vae_{dataset}", configs["video_vae"])
    dit = {**view, **_model(p["models"]["latent_dit"]), "vae.workdir": str(vae_workdir)}
    dit["sample.steps"] = p["sample_steps"]["dit"]
    if rgb:  # unconditional: no labels to drop
        dit.update({"model.num_classes": 0, "flow.label_dropout": 0.0})
    configs["latent_dit"] = config("latent_dit", dit)
    configs["causal_dit"] = config("causal_dit", dit)
    kf = {**view, **_model(p["models"]["keyframes"]), "model.image_size": p["resolution"]}
    kf["sample.steps"] = p["sample_steps"]["keyframes"]
    if rgb:
        kf.update({"model.in_channels": 3, "model.out_channels": 3, "model.num_classes": 0})
        kf["diffusion.label_dropout"] = 0.0
    configs["keyframes"] = config("keyframes", kf)
    return configs


def train_models(dataset: str, configs: dict[str, Any], workdirs) -> dict[str, Any]:
    """Train (or reuse) every model of `model_configs`, the VAE first; returns {name: (config,
    workdir)} (each workdir's marker holds its training seconds: `common.trained_seconds`)."""
    return {
        name: (config, common.train_stage(config, workdirs, f"{LABELS[name]}_{dataset}")[0])
        for name, config in configs.items()
    }


def _model(fields: dict[str, Any]) -> dict[str, Any]:
    return {f"model.{k}": v for k, v in fields.items()}
