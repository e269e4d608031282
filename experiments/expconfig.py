"""Experiments as config files: `configs/experiments/<name>.py:<preset>` with any field
overridden on the command line, through the project's own machinery (`cascade.configs.load`,
`cascade.config_overrides.set_override`, `cascade.cli`'s one-line user errors):

    python -m experiments.vdm_ablations --config=configs/experiments/vdm_ablations.py:cpu \
        --config.seeds=3 --config.ablations=joint_training,cfg

A user mistake (unknown key, bad value, unknown ablation) prints one line and exits 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ml_collections
from absl import flags

HELP_ARGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")


def load(spec: str, overrides: Sequence[tuple[str, str | None]] = ()) -> ml_collections.ConfigDict:
    """The experiment config of `spec` ('configs/experiments/x.py:cpu', or 'experiments/x:cpu'
    relative to configs/) with `--config.<key>=<text>` overrides applied (a bare boolean key
    means true)."""
    from cascade import config_overrides, configs

    config = configs.load(spec)
    for key, text in overrides:
        config_overrides.set_override(config, key, "true" if text is None else text)
    return config


def names(text: str, allowed: Iterable[str], key: str) -> list[str]:
    """'a,b' -> ['a', 'b'] ('all': every allowed name, in order); an unknown name is a
    ConfigError naming `key` and what is allowed."""
    from cascade.configs import ConfigError

    allowed = list(allowed)
    chosen = allowed if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in allowed]
    if unknown or not chosen:
        raise ConfigError(
            f"config.{key}={text!r}: unknown {unknown or 'empty'}; choose 'all' or a comma "
            f"list of {', '.join(allowed)}."
        )
    return chosen


def at_least(config: ml_collections.ConfigDict, key: str, minimum: float) -> None:
    """config[key] >= minimum, else a ConfigError naming the key."""
    from cascade.configs import ConfigError

    value = config
    for part in key.split("."):
        value = value[part]
    if not value >= minimum:
        raise ConfigError(f"config.{key} must be >= {minimum}, got {value!r}.")


def main(
    body: Callable[[ml_collections.ConfigDict], Any],
    check: Callable[[ml_collections.ConfigDict], None],
    default_spec: str,
    doc: str | None,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse `--config=FILE:PRESET` and its overrides, `check` the config (every mistake a
    ConfigError/UsageError: one line, exit 2, nothing trained), then `body(config)`."""
    from cascade import cli

    argv = list(sys.argv if argv is None else argv)
    fv = cli.new_flags()
    cli.define_config(fv, f"Experiment config (default {default_spec}).")
    if any(a in HELP_ARGS for a in argv[1:]):
        print((doc or "").strip() + "\n\nFlags:\n" + fv.get_help())
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def run() -> None:
        rest, overrides = cli.split_overrides(argv)
        try:
            leftover = fv(rest)
        except flags.Error as err:
            raise cli.UsageError(f"{err}. Pass --help for the flags.") from None
        if len(leftover) > 1:
            raise cli.UsageError(f"unexpected arguments {leftover[1:]}. Pass --help for the flags.")
        config = load(fv.config or default_spec, overrides)
        check(config)
        for name in ("out", "workdirs", "data_dir"):
            cli.check_writable_dir(config[name], f"config.{name}")
        body(config)

    return cli.guarded(run)
