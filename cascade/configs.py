"""Config schema helpers: shared sections, named presets, validation with clear errors.

Every file under `configs/` defines `get_config(arg)`; `arg` names a preset
(`configs/base.py:tiny`). The returned ConfigDict is locked, so a command-line
override of a key that does not exist (`--config.train.stpes=5`) fails with
the key's name, and ml_collections refuses values of the wrong type.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import ml_collections

T = TypeVar("T")

STAGES = ("base", "temporal_sr", "spatial_sr", "video_vae", "latent_dit", "cascade", "single_stage")


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
    """Load 'configs/base.py:tiny' (or 'base:tiny', resolved in the repo's configs/) like the CLI."""
    path, _, preset = spec.partition(":")
    file = Path(path)
    if not file.suffix:
        file = CONFIG_DIR / f"{path}.py"
    if not file.exists():
        raise ConfigError(f"config file {file} does not exist.")
    module_spec = importlib.util.spec_from_file_location(f"_cascade_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(preset or None)


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
