"""Up-front validation of config values (ranges, choices, keys a stage would ignore).

`validate(config)` runs `check_config` once, before anything is
built or compiled, in every entry point. Each check names the key, the value and
what is allowed, so a mistake is one clear message instead of a late
ZeroDivisionError, a shape error after compiling, or a setting silently ignored.
Model sections are checked by their dataclasses when the stage is built.
"""

from __future__ import annotations

import math
import re
from typing import Any

import ml_collections

from cascade.configs import STAGES, ConfigError, check_choice

GAUSSIAN_STAGES = ("keyframes", "temporal_sr", "spatial_sr")
DATA_STAGES = (*GAUSSIAN_STAGES, "video_vae", "latent_dit", "av_dit")
# cascade.data.loading.KNOWN_DATASETS, repeated so that checking a config never imports
# TensorFlow (20 s on 2 busy cores); tests/test_config_keys.py keeps the two equal.
KNOWN_DATASETS = (
    "moving_digits",
    "bouncing_shapes",
    "moving_mnist",
    "bair_robot_pushing_small",
    "ucf101",
)
REMOTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _num(value: Any, key: str, *, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"config.{key} must be {kind}, got {value!r}.")
    if not math.isfinite(value):
        raise ConfigError(f"config.{key} must be finite, got {value!r}.")
    return value


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def at_least(section, name: str, low: float, where: str, *, integer: bool = True) -> None:
    value = _num(section[name], _key(where, name), integer=integer)
    if value < low:
        raise ConfigError(f"config.{_key(where, name)} must be >= {low}, got {value!r}.")


def positive(section, name: str, where: str) -> None:
    value = _num(section[name], _key(where, name))
    if value <= 0:
        raise ConfigError(f"config.{_key(where, name)} must be > 0, got {value!r}.")


def in_range(section, name: str, low: float, high: float, where: str, *, high_open=False) -> None:
    value = _num(section[name], _key(where, name))
    if value < low or value > high or (high_open and value == high):
        bracket = ")" if high_open else "]"
        raise ConfigError(
            f"config.{_key(where, name)} must be in [{low}, {high}{bracket}, got {value!r}."
        )


def nonempty_path(value: Any, key: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"config.{key} is empty: name a directory.")
    if REMOTE.match(value):
        raise ConfigError(
            f"config.{key}={value!r}: remote paths are not supported for workdirs; use a local "
            "or mounted directory (e.g. a gcsfuse mount of the bucket)."
        )


# -- sections --------------------------------------------------------------------------------
def check_train(t: ml_collections.ConfigDict) -> None:
    for name in ("batch_size", "steps", "log_every", "checkpoint_every", "keep_checkpoints"):
        if name in t:  # a distillation config has no steps / checkpoint_every (its rounds do)
            at_least(t, name, 1, "train")
    for name in ("warmup_steps", "sample_every", "num_samples"):
        at_least(t, name, 0, "train")
    bad = [s for s in t.get("keep_steps", ()) if not 1 <= s <= t.get("steps", s)]
    if bad:
        raise ConfigError(
            f"config.train.keep_steps: steps {bad} lie outside the run's 1..{t.steps} steps."
        )
    at_least(t, "max_nonfinite_steps", 1, "train")
    positive(t, "learning_rate", "train")
    at_least(t, "weight_decay", 0, "train", integer=False)
    at_least(t, "grad_clip", 0, "train", integer=False)
    for name in ("b1", "b2", "ema_decay"):
        in_range(t, name, 0.0, 1.0, "train", high_open=True)
    check_choice(t.lr_schedule, ("constant", "cosine"), "train.lr_schedule")


def check_mesh(m: ml_collections.ConfigDict) -> None:
    for axis in ("data", "fsdp"):
        value = _num(m[axis], f"mesh.{axis}", integer=True)
        if value != -1 and value < 1:
            raise ConfigError(
                f"config.mesh.{axis} must be -1 (every remaining device) or >= 1, got {value}."
            )
    if m.data == -1 and m.fsdp == -1:
        raise ConfigError("config.mesh: at most one of data/fsdp may be -1.")
    if "rules" not in m:  # a runner's mesh: its shape only
        return
    at_least(m, "fsdp_min_size", 0, "mesh")
    for rule in m.rules:
        if not isinstance(rule, list | tuple) or len(rule) != 2:
            raise ConfigError(
                f"config.mesh.rules: each rule is (regex, partition spec); got {rule!r}."
            )
        try:
            re.compile(rule[0])
        except (re.error, TypeError) as err:
            raise ConfigError(f"config.mesh.rules: bad regex {rule[0]!r}: {err}.") from None


def check_data(d: ml_collections.ConfigDict) -> None:
    if str(d.name).partition("/")[0] not in KNOWN_DATASETS:
        raise ConfigError(
            f"config.data.name={d.name!r} is not a known data set; choose one of "
            f"{', '.join(KNOWN_DATASETS)}."
        )
    if not isinstance(d.data_dir, str) or not d.data_dir.strip():
        raise ConfigError("config.data.data_dir is empty: name the TFDS data directory.")
    for name in ("frames", "resolution", "num_train", "num_test", "shuffle_buffer"):
        at_least(d, name, 1, "data")


def check_view(config: ml_collections.ConfigDict) -> None:
    v, d = config.view, config.data
    for name in ("frames", "resolution", "frame_stride", "channels"):
        at_least(v, name, 1, "view")
    at_least(v, "extra_images", 0, "view")
    if v.extra_images and config.stage != "keyframes":
        raise ConfigError(
            f"config.view.extra_images={v.extra_images}: joint image-video training is a keyframe "
            f"stage feature; a {config.stage} stage would ignore it. Set it to 0."
        )
    pool = d.get("image_pool", 0)
    if pool:
        at_least(d, "image_pool", 1, "data")
        if not v.extra_images:
            raise ConfigError(
                f"config.data.image_pool={pool} is where a keyframe stage's extra images come "
                "from (joint image-video training), but view.extra_images=0: nothing would read "
                "it. Set view.extra_images > 0 (keyframes) or data.image_pool=0."
            )
    span = v.frames * v.frame_stride
    if span > d.frames:
        raise ConfigError(
            f"config.view: frames={v.frames} x frame_stride={v.frame_stride} = {span} frames, "
            f"but stored clips have only config.data.frames={d.frames}."
        )
    if d.resolution % v.resolution:
        raise ConfigError(
            f"config.view.resolution={v.resolution} must divide config.data.resolution="
            f"{d.resolution} (frames are box-downsampled by an integer factor)."
        )


def _unconditional_refuses(config, key: str, value: float) -> None:
    if value and config.model.num_classes <= 0:
        raise ConfigError(
            f"config.{key}={value} has no effect: this {config.stage} stage is unconditional "
            "(config.model.num_classes=0). Set it to 0, or give the model classes."
        )


def check_gaussian(config: ml_collections.ConfigDict) -> None:
    from cascade.diffusion import gaussian, samplers, schedules

    d, s = config.diffusion, config.sample
    check_choice(d.schedule, tuple(schedules.SCHEDULES), "diffusion.schedule")
    check_choice(d.parametrization, gaussian.PARAMETRIZATIONS, "diffusion.parametrization")
    check_choice(d.loss, gaussian.WEIGHTINGS, "diffusion.loss")
    if not d.logsnr_min < d.logsnr_max:
        raise ConfigError(
            f"config.diffusion: logsnr_min={d.logsnr_min} must be < logsnr_max={d.logsnr_max}."
        )
    positive(d, "schedule_shift", "diffusion")
    in_range(d, "label_dropout", 0.0, 1.0, "diffusion", high_open=True)
    _unconditional_refuses(config, "diffusion.label_dropout", d.label_dropout)
    check_choice(s.sampler, samplers.SAMPLERS, "sample.sampler")
    at_least(s, "steps", 1, "sample")
    at_least(s, "eta", 0, "sample", integer=False)
    in_range(s, "gamma", 0.0, 1.0, "sample")
    at_least(s, "guidance_scale", 0, "sample", integer=False)
    _unconditional_refuses(config, "sample.guidance_scale", s.guidance_scale)
    if "sr" in config:
        sr = config.sr
        at_least(sr, "factor", 2, "sr")
        in_range(sr, "aug_max_t", 0.0, 1.0, "sr")
        in_range(sr, "sample_aug_t", 0.0, 1.0, "sr")
        at_least(sr, "crop", 0, "sr")
        at_least(sr, "crop_frames", 0, "sr")
        if config.stage == "temporal_sr" and sr.crop:
            raise ConfigError(
                f"config.sr.crop={sr.crop}: random crops are a spatial_sr feature; a temporal_sr "
                "stage trains on whole frames and would ignore it. Set it to 0."
            )


def check_latent_dit(config: ml_collections.ConfigDict) -> None:
    f, s, vae = config.flow, config.sample, config.vae
    positive(f, "logit_std", "flow")
    _num(f.logit_mean, "flow.logit_mean")
    positive(f, "shift", "flow")
    in_range(f, "label_dropout", 0.0, 1.0, "flow", high_open=True)
    _unconditional_refuses(config, "flow.label_dropout", f.label_dropout)
    check_choice(s.sampler, ("euler", "heun"), "sample.sampler")
    at_least(s, "steps", 1, "sample")
    positive(s, "shift", "sample")
    at_least(s, "guidance_scale", 0, "sample", integer=False)
    _unconditional_refuses(config, "sample.guidance_scale", s.guidance_scale)
    nonempty_path(vae.workdir, "vae.workdir")
    at_least(vae, "latent_scale", 0, "vae", integer=False)
    check_choice(vae.latents, ("on_the_fly", "cached"), "vae.latents")
    if "causal" in config:  # the causal latent DiT (cascade.stages.causal_dit)
        c = config.causal
        check_choice(c.noise, ("independent", "pyramid", "teacher_forcing"), "causal.noise")
        in_range(c, "context_t", 0.0, 1.0, "causal", high_open=True)
        at_least(c, "window", 1, "causal")
        at_least(c, "length", 1, "causal")
        at_least(config.model, "causal_chunk", 1, "model")
    if "bench" in config:
        shape = tuple(config.bench.latent_shape)
        if len(shape) != 4 or not all(isinstance(n, int) and n >= 1 for n in shape):
            raise ConfigError(
                f"config.bench.latent_shape must be 4 positive ints (T, h, w, C), got {shape}."
            )


def check_av_dit(config: ml_collections.ConfigDict) -> None:
    """The joint audio-video stage (cascade.stages.av_dit): clips with sound, one frame stride."""
    f, s, a = config.flow, config.sample, config.audio
    if not config.data.sound:
        raise ConfigError(
            "config.data.sound=False: the av_dit stage generates clips with their sound; set "
            "config.data.sound=True (data.name='bouncing_shapes')."
        )
    if config.view.frame_stride != 1:
        raise ConfigError(
            f"config.view.frame_stride={config.view.frame_stride}: av_dit keeps every frame "
            "(the sound of skipped frames would have no frame); set it to 1."
        )
    positive(f, "logit_std", "flow")
    _num(f.logit_mean, "flow.logit_mean")
    positive(f, "shift", "flow")
    in_range(f, "label_dropout", 0.0, 1.0, "flow", high_open=True)
    _unconditional_refuses(config, "flow.label_dropout", f.label_dropout)
    check_choice(s.sampler, ("euler", "heun"), "sample.sampler")
    at_least(s, "steps", 1, "sample")
    positive(s, "shift", "sample")
    for name in ("video_guidance", "audio_guidance"):
        at_least(s, name, 0, "sample", integer=False)
        _unconditional_refuses(config, f"sample.{name}", s[name])
    _num(a.center, "audio.center")
    positive(a, "scale", "audio")
    at_least(a, "griffin_lim_iters", 1, "audio")
    # cascade.stages.av_dit.AV_MODES (not imported: checks run before jax is loaded)
    check_choice(config.av.mode, ("joint", "video_then_audio", "audio_then_video"), "av.mode")
    positive(config.av, "clean_prob", "av")  # 0 or 1 would never train one of the two stages
    in_range(config.av, "clean_prob", 0.0, 1.0, "av", high_open=True)


def check_runner(config: ml_collections.ConfigDict) -> None:
    """cascade / single_stage configs: what the runner reads before loading checkpoints."""
    for name in ("num_samples", "batch_size", "fps"):
        at_least(config, name, 1, "")
    if config.stage == "single_stage":
        s = config.dit
        nonempty_path(s.workdir, "dit.workdir")
        check_choice(s.sampler, ("euler", "heun"), "dit.sampler")
        at_least(s, "steps", 1, "dit")
        at_least(s, "checkpoint_step", 0, "dit")
        positive(s, "shift", "dit")
        at_least(s, "guidance_scale", 0, "dit", integer=False)
        return
    if not config.order:
        raise ConfigError("config.order is empty: name the stages to chain.")
    for i, name in enumerate(config.order):
        if name not in config.stages:
            raise ConfigError(
                f"config.order names {name!r}, which is not in config.stages "
                f"({', '.join(config.stages.keys())})."
            )
        s, where = config.stages[name], f"stages.{name}"
        nonempty_path(s.workdir, f"{where}.workdir")
        check_choice(s.sampler, ("ddpm", "ddim"), f"{where}.sampler")
        at_least(s, "steps", 1, where)
        at_least(s, "checkpoint_step", 0, where)
        at_least(s, "eta", 0, where, integer=False)
        if "guidance_scale" in s:
            at_least(s, "guidance_scale", 0, where, integer=False)
        if "aug_t" in s:
            in_range(s, "aug_t", 0.0, 1.0, where)
            if i == 0:
                raise ConfigError(
                    f"config.{where}.aug_t: the first stage generates from noise and has no "
                    "conditioning to augment; remove the key."
                )


def check_distill(config: ml_collections.ConfigDict) -> None:
    from cascade.diffusion.gaussian import WEIGHTINGS

    d = config.distill
    nonempty_path(d.teacher_workdir, "distill.teacher_workdir")
    for name in ("start_steps", "end_steps", "steps_per_round", "compare_videos"):
        at_least(d, name, 1, "distill")
    check_choice(d.weighting, ("auto", *WEIGHTINGS), "distill.weighting")
    from cascade.diffusion.distill import rounds

    rounds(d.start_steps, d.end_steps)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Every check that applies to `config.stage`; raises ConfigError on the first problem."""
    if "stage" not in config:
        raise ConfigError("config has no 'stage' key: is this a cascade config file?")
    check_choice(config.stage, (*STAGES, "distill"), "stage")
    if "seed" in config:
        at_least(config, "seed", 0, "")
    if "mesh" in config:
        check_mesh(config.mesh)
    if config.stage in ("cascade", "single_stage"):
        check_runner(config)
        return
    check_train(config.train)
    if config.stage == "distill":
        check_distill(config)
        return
    check_data(config.data)
    check_view(config)
    if config.stage in GAUSSIAN_STAGES:
        check_gaussian(config)
    elif config.stage == "latent_dit":
        check_latent_dit(config)
    elif config.stage == "av_dit":
        check_av_dit(config)
    else:  # video_vae
        check_choice(config.loss.recon, ("l1", "l2"), "loss.recon")
        at_least(config.loss, "kl_weight", 0, "loss", integer=False)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check every value of a config (ranges, choices, keys a stage would ignore) before
    anything is built; the first problem is a ConfigError naming the key. Returns `config`."""
    check_config(config)
    return config
