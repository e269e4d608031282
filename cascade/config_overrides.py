"""Command-line overrides `--config.<dotted.key>=<text>`: the text parsed as the type of the
value it replaces, an unknown key named with the closest existing one."""

from __future__ import annotations

import ast
import difflib
from typing import Any

import ml_collections

from cascade.configs import ConfigError


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
