"""Config schema helpers: shared sections, named presets, validation with clear errors.

Every file under `configs/` defines `get_config(arg)`; `arg` names a preset
(`configs/keyframes.py:tiny`). The returned ConfigDict is locked, so a command-line
override of a key that does not exist (`--config.train.stpes=5`) fails with
the key's name, and ml_collections refuses values of the wrong type.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import ml_collections

T = TypeVar("T")

STAGES = (
    "keyframes",
    "temporal_sr",
    "spatial_sr",
    "video_vae",
    "latent_dit",
    "av_dit",
    "cascade",
    "single_stage",
)


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and what is allowed."""


def data_section(name: str = "moving_digits") -> ml_collections.ConfigDict:
    """Where clips come from. Embedded builders are sized by num_train/num_test."""
    return ml_collections.ConfigDict(
        {
            "name": name,
            "data_dir": "~/tensorflow_datasets",
            "frames": 32,  # frames per stored clip
            "resolution": 64,  # stored clip height = width
            "num_train": 1000,
            "num_test": 100,
            "shuffle_buffer": 1024,
            # > 0: a keyframe stage with view.extra_images takes its images from a batch of
            # this set built with image_pool training clips (few videos, many images), not
            # from the batch's own clips (cascade.data.pipeline.image_pool_config).
            "image_pool": 0,
            # bouncing_shapes only: clips also carry a synchronized impact sound track
            # ("audio") and their impact times (cascade.data.builders.bouncing_shapes_sound).
            "sound": False,
        }
    )


def train_section() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "batch_size": 8,  # global batch, split over every data-parallel device
            "steps": 10_000,
            "learning_rate": 2e-4,
            "warmup_steps": 500,
            "lr_schedule": "constant",  # constant | cosine (both after linear warmup)
            "weight_decay": 0.0,
            "b1": 0.9,
            "b2": 0.99,
            "grad_clip": 1.0,
            "ema_decay": 0.999,
            "log_every": 50,
            "checkpoint_every": 1000,
            "keep_checkpoints": 3,
            # Steps also saved and never deleted (e.g. to measure quality along training).
            "keep_steps": (),
            "async_checkpointing": True,
            "sample_every": 0,  # 0: sample only at the end of training
            "num_samples": 4,
            "max_nonfinite_steps": 5,  # consecutive skipped updates before stopping
        }
    )


def mesh_section() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "data": -1,  # -1: every device not used by fsdp
            "fsdp": 1,
            # (regex over parameter paths like "down/0/conv/kernel", partition spec) pairs;
            # unmatched parameters fall back to FSDP on their largest divisible dimension.
            "rules": [],
            "fsdp_min_size": 2**14,
        }
    )


def runner_mesh_section() -> ml_collections.ConfigDict:
    """The mesh a runner (cascade, single stage) samples on: its shape only; how parameters are
    sharded comes from each trained stage's own config.mesh."""
    return ml_collections.ConfigDict({"data": -1, "fsdp": 1})


def view_section(frames: int, resolution: int, frame_stride: int = 1) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "frames": frames,  # frames this stage generates
            "resolution": resolution,  # their height = width
            "frame_stride": frame_stride,  # temporal sub-sampling of the stored clip
            "channels": 1,
            "extra_images": 0,  # independent images per clip for joint image-video training
        }
    )


def diffusion_section(
    parametrization: str = "eps", loss: str = "eps_mse"
) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "schedule": "cosine",
            "logsnr_min": -20.0,
            "logsnr_max": 20.0,
            "schedule_shift": 1.0,  # resolution shift of the cosine schedule (1 = none)
            "parametrization": parametrization,
            "loss": loss,
            "label_dropout": 0.1,  # classifier-free guidance training (0 = off)
        }
    )


def sample_section(steps: int = 128) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "sampler": "ddpm",  # ddpm (ancestral) | ddim
            "steps": steps,
            "eta": 0.0,  # DDIM stochasticity
            "gamma": 0.3,  # VDM ancestral variance interpolation
            "guidance_scale": 0.0,  # classifier-free guidance w (0 = conditional only)
            "clip_x0": True,
        }
    )


def sr_section(factor: int, upsample: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "factor": factor,  # k (temporal: frames x k) or s (spatial: height, width x s)
            "upsample": upsample,  # temporal: repeat | linear ; spatial: bilinear
            "noise_aug": True,  # noise conditioning augmentation on the low-res clip
            "aug_max_t": 0.5,  # training: aug level t ~ U(0, aug_max_t) on the schedule
            "sample_aug_t": 0.1,  # sampling: fixed aug level
            "crop": 0,  # spatial SR: train on random crops of this size (0 = full frames)
            # Train on random windows of this many frames (0 = whole clips). Both SR networks
            # are convolutional in time, so they still sample whole clips; a 4-frame window
            # costs a quarter of a 16-frame clip per step.
            "crop_frames": 0,
            # Diffuse target - upsample(cond) instead of the target, and add the upsampled
            # input back after sampling (the network learns what the upsampler gets wrong).
            "residual": False,
        }
    )


def vae_loss_section() -> ml_collections.ConfigDict:
    # L2: on mostly-background clips (digits, shapes) L1 first learns the background median
    # and stalls there; measured on the tiny preset: 14.8 dB (L1) vs 19.5 dB (L2) at 200 steps.
    return ml_collections.ConfigDict({"recon": "l2", "kl_weight": 1e-6})


def flow_section() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "logit_mean": 0.0,  # SD3 logit-normal t: m
            "logit_std": 1.0,  # s
            "shift": 1.0,  # resolution shift a of t' = a t / (1 + (a - 1) t)
            "label_dropout": 0.1,
        }
    )


def flow_sample_section(steps: int = 32) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {"sampler": "euler", "steps": steps, "shift": 1.0, "guidance_scale": 0.0}
    )


def causal_section(window: int, length: int = 8) -> ml_collections.ConfigDict:
    """The causal latent DiT (cascade.stages.causal_dit): per-frame noise and rollout."""
    return ml_collections.ConfigDict(
        {
            # Training flow time per latent frame: independent, pyramid (sorted along time)
            # or teacher_forcing (clean context, one noised target chunk).
            "noise": "independent",
            "context_t": 0.05,  # flow time of the cached context while rolling out
            "window": window,  # chunks of cached context (sliding attention window)
            "length": length,  # --mode=sample writes videos of `length` x the trained latents
        }
    )


def vae_section(workdir: str = "workdirs/video_vae") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "workdir": workdir,  # a trained video_vae stage
            # 0: 1 / std of the latents of the first training clips, measured when training
            # starts and stored in the checkpoint (sampling never reads the training set)
            "latent_scale": 0.0,
            "sample_posterior": True,  # z ~ q(z|x) rather than its mean
            # on_the_fly: encode every batch's random window. cached: each clip's first window
            # is encoded once (posterior moments kept in memory, keyed by the clip's content)
            # and only the posterior sample is drawn per step.
            "latents": "on_the_fly",
        }
    )


def distill_section(teacher_workdir: str = "") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "teacher_workdir": teacher_workdir,
            "start_steps": 64,  # the teacher's deterministic sampler
            "end_steps": 4,  # the student's
            "steps_per_round": 500,
            "compare_videos": 8,  # samples for the student-vs-teacher report
            # Loss weighting of a Gaussian student: "auto" = the teacher's diffusion.loss, or
            # any of gaussian.WEIGHTINGS (Salimans & Ho: "snr_trunc", max(SNR, 1) on the x
            # error). A flow-matching student has one loss (velocity MSE): "auto" only.
            "weighting": "auto",
        }
    )


def model_section(config_cls: type, **overrides: Any) -> ml_collections.ConfigDict:
    """A ConfigDict with every field of a model's dataclass config (defaults + overrides)."""
    values = {f.name: f.default for f in dataclasses.fields(config_cls)}
    check_keys(overrides, values, "model")
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def check_keys(given: Iterable[str], allowed: Iterable[str], where: str) -> None:
    allowed = list(allowed)
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"config.{where}: unknown key {key!r}.{hint} Allowed keys: {', '.join(sorted(allowed))}."
            )


def check_choice(value: Any, allowed: Iterable[Any], key: str) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"config.{key} = {value!r} is not allowed; choose one of {allowed}.")


def build_dataclass(config_cls: type[T], section: ml_collections.ConfigDict, where: str) -> T:
    """Instantiate a model's dataclass config from its ConfigDict section, naming bad keys."""
    values = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    check_keys(values, [f.name for f in dataclasses.fields(config_cls)], where)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config.{where}: {err}") from err


def apply_preset(
    config: ml_collections.ConfigDict,
    arg: str | None,
    presets: Mapping[str, Callable[[ml_collections.ConfigDict], None]],
    *,
    file: str,
) -> ml_collections.ConfigDict:
    """Apply the preset named by `arg` (None or "" = "default") and lock the config."""
    name = arg or "default"
    if name not in presets:
        raise ConfigError(
            f"{file}: unknown preset {name!r}; available presets: {', '.join(sorted(presets))}."
        )
    presets[name](config)
    config.preset = name
    config.lock()
    return config


def ensure_divisible(value: int, divisor: int, what: str) -> None:
    if divisor <= 0 or value % divisor:
        raise ConfigError(f"{what}: {value} is not divisible by {divisor}.")


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def load(spec: str) -> ml_collections.ConfigDict:
    """Load 'configs/keyframes.py:tiny' (or 'keyframes:tiny', resolved in the repo's configs/) like the CLI.

    Every way a config file can be wrong (missing, not Python, a syntax error, an exception
    while it runs, no `get_config`, an unknown preset) is a ConfigError naming the file.
    """
    path, _, preset = spec.partition(":")
    if not path:
        raise ConfigError("--config is empty: name a config file, e.g. configs/keyframes.py:tiny.")
    file = Path(path).expanduser()
    if not file.suffix:
        file = CONFIG_DIR / f"{path}.py"
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise ConfigError(
            f"config file {file} {what}. Config files live in {CONFIG_DIR} "
            f"({', '.join(sorted(f.name for f in CONFIG_DIR.glob('*.py')))})."
        )
    if file.suffix != ".py":
        raise ConfigError(f"config file {file} is not a Python file (.py).")
    module_spec = importlib.util.spec_from_file_location(f"_cascade_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as err:
        raise ConfigError(
            f"config file {file}, line {err.lineno}: syntax error: {err.msg}."
        ) from None
    except Exception as err:  # noqa: BLE001 - any failure of the user's file is a config error
        raise ConfigError(f"config file {file} failed to load: {_describe(err, file)}") from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(
            f"config file {file} defines no get_config(arg) function; every config file must."
        )
    try:
        config = get_config(preset or None)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ConfigError(
            f"{file}: get_config({preset!r}) failed: {_describe(err, file)}"
        ) from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"{file}: get_config returned a {type(config).__name__}, not a ConfigDict."
        )
    return config


def _describe(err: Exception, file: Path) -> str:
    """'NameError: name x is not defined (line 12)': the error and its line in `file`."""
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if Path(f.filename) == file]
    where = f" (line {lines[-1]})" if lines else ""
    return f"{type(err).__name__}: {err}{where}."


TINY_TRAINING = dict(
    batch_size=8, steps=4, warmup_steps=1, log_every=2, checkpoint_every=2, num_samples=2
)
QUICK_TRAINING = dict(
    batch_size=8, warmup_steps=100, log_every=50, checkpoint_every=500, num_samples=8
)


def tiny_training(train: ml_collections.ConfigDict, **overrides: Any) -> None:
    """The `tiny` presets' training: a few steps, a checkpoint every 2 (for tests)."""
    train.update({**TINY_TRAINING, **overrides})


def quick_training(train: ml_collections.ConfigDict, steps: int, **overrides: Any) -> None:
    """The `quick` presets' training: `steps` steps at batch 8, minutes on 2 CPU cores."""
    train.update({**QUICK_TRAINING, "steps": steps, **overrides})
