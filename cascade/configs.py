"""Config schema helpers: shared sections, named presets, validation with clear errors.

Every file under `configs/` defines `get_config(arg)`; `arg` names a preset
(`configs/base.py:tiny`). The returned ConfigDict is locked, so a command-line
override of a key that does not exist (`--config.train.stpes=5`) fails with
the key's name, and ml_collections refuses values of the wrong type.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import traceback
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


def runner_mesh_section() -> ml_collections.ConfigDict:
    """The mesh a runner (cascade, single stage) samples on: its shape only; how parameters are
    sharded comes from each trained stage's own config.mesh."""
    return ml_collections.ConfigDict({"data": -1, "fsdp": 1})


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
    """Load 'configs/base.py:tiny' (or 'base:tiny', resolved in the repo's configs/) like the CLI.

    Every way a config file can be wrong (missing, not Python, a syntax error, an exception
    while it runs, no `get_config`, an unknown preset) is a ConfigError naming the file.
    """
    path, _, preset = spec.partition(":")
    if not path:
        raise ConfigError("--config is empty: name a config file, e.g. configs/base.py:tiny.")
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


def set_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """Apply one command-line override `--config.<dotted>=<text>`, parsing `text` as the type
    of the field it replaces; a key that does not exist or a value that does not parse is a
    ConfigError naming the key (with the closest existing key)."""
    parts = dotted.split(".")
    target, path = config, []
    for i, part in enumerate(parts):
        where = f"config.{'.'.join(path)}" if path else "the config"
        if not isinstance(target, ml_collections.ConfigDict):
            raise ConfigError(f"{where} is a value, not a section: cannot set {dotted!r}.")
        if not part or part not in target:
            close = difflib.get_close_matches(part, list(target.keys()), n=1)
            hint = f" Did you mean {'.'.join([*path, close[0]])!r}?" if close else ""
            raise ConfigError(
                f"--config.{dotted}: {where} has no key {part!r}.{hint} Its keys: "
                f"{', '.join(sorted(target.keys()))}."
            )
        path.append(part)
        if i < len(parts) - 1:
            target = target[part]
    key = parts[-1]
    current = target[key]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(
            f"--config.{dotted}: config.{dotted} is a section; set one of its keys "
            f"({', '.join(sorted(current.keys()))}), e.g. --config.{dotted}.{next(iter(current.keys()))}=..."
        )
    value = parse_value(text, current, f"config.{dotted}")
    try:
        target[key] = value
    except (TypeError, ValueError, AttributeError) as err:
        raise ConfigError(f"--config.{dotted}={text}: {err}") from None


def parse_value(text: str, current: Any, key: str) -> Any:
    """`text` as a value of the type of `current` (bool, int, float, str, tuple/list, None)."""
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key} is a boolean; got {text!r} (use true or false).")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key} is an integer; got {text!r}.") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key} is a number; got {text!r}.") from None
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if isinstance(current, list | tuple):
            raise ConfigError(
                f"{key} is a sequence like {current!r}; got {text!r} (write e.g. '(1, 2)')."
            ) from None
        return text
    if isinstance(current, list | tuple):
        if not isinstance(value, list | tuple):
            value = (value,)
        return type(current)(value)
    return value


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check every value of a config (ranges, choices, keys a stage would ignore) before
    anything is built; the first problem is a ConfigError naming the key. Returns `config`."""
    from cascade.config_checks import check_config

    check_config(config)
    return config


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
