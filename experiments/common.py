"""What both experiments share: their flags, the data they train on, and training a config
in a subfolder named by its hash. Tables and plots are written by `experiments.tables`;
FVD, FLOPs and content metrics come from `cascade.evaluation` (the `--mode=evaluate` code).

Trained stages live in `workdirs/<label>-<hash>`, the hash covering every config field
that changes the trained weights (not the data_dir nor logging/checkpoint cadence). Two
experiments that ask for the same stage with the same settings therefore share one
trained workdir, an interrupted run resumes, and a changed setting never reuses a
checkpoint trained with another.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
from absl import flags

PRESETS = ("tiny", "quick")

# Both experiments train on the same stored clips: 17 frames (1 + 4k for the causal VAE,
# and >= 16 for the cascade's final clips and the 16-frame ablation views).
DATA = {
    "tiny": {"num_train": 16, "num_test": 8, "frames": 17, "resolution": 16},
    "quick": {"num_train": 512, "num_test": 64, "frames": 17, "resolution": 32},
}

# Config fields that do not change the trained weights (left out of the workdir hash).
NOT_HASHED = (
    "data.data_dir",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.async_checkpointing",
    "train.num_samples",
    "train.sample_every",
)


def define_flags(default_out: str, fv: flags.FlagValues | None = None) -> flags.FlagValues:
    """The flags both scripts take, in their own FlagValues (`fv` or a new one), so importing
    or running the experiments in one process never clashes with another program's flags."""
    fv = fv if fv is not None else flags.FlagValues()
    flags.DEFINE_string(
        "out", default_out, "Output folder: tables, plot, videos (local).", flag_values=fv
    )
    flags.DEFINE_enum(
        "preset", "tiny", list(PRESETS), "Preset of every stage trained.", flag_values=fv
    )
    flags.DEFINE_string(
        "data_dir",
        "results/data",
        "TFDS data_dir; the embedded moving_digits is built there.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "workdirs",
        "results/workdirs",
        "Where trained stages live (<label>-<config hash>); shared, so experiments reuse them.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "fvd_videos",
        16,
        "Videos per side for FVD (I3D: ~2.6 s/clip on 2 cores); 0 or 1: off.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_videos",
        None,
        "Videos sampled per pipeline / setting, >= 1 (default max(fvd_videos, 4)).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "steps_scale",
        1.0,
        "Multiplies every preset's training steps, > 0 (e.g. 0.1 for a dry run).",
        flag_values=fv,
    )
    return fv


def flag_kwargs(fv: flags.FlagValues | None = None) -> dict[str, Any]:
    """The shared flags' values as keyword arguments of the scripts' `run`."""
    f = fv if fv is not None else flags.FLAGS
    return {
        "preset": f.preset,
        "data_dir": f.data_dir,
        "workdirs": f.workdirs,
        "fvd_videos": f.fvd_videos,
        "num_videos": f.num_videos,
        "steps_scale": f.steps_scale,
    }


def check_flags(fv: flags.FlagValues) -> None:
    """Refuse flag values that cannot work, naming the flag, before anything is trained."""
    from cascade import cli

    if fv.fvd_videos < 0:
        raise cli.UsageError(f"--fvd_videos must be >= 0 (0 or 1: no FVD), got {fv.fvd_videos}.")
    if fv.num_videos is not None and fv.num_videos < 1:
        raise cli.UsageError(f"--num_videos must be >= 1, got {fv.num_videos}.")
    if not fv.steps_scale > 0 or not math.isfinite(fv.steps_scale):
        raise cli.UsageError(f"--steps_scale must be > 0, got {fv.steps_scale}.")
    if "guidance_scale" in fv and not fv.guidance_scale >= 0:
        raise cli.UsageError(f"--guidance_scale must be >= 0, got {fv.guidance_scale}.")
    cli.check_data_dir(fv.data_dir, "--data_dir")
    for name in ("out", "workdirs", "data_dir"):
        cli.check_writable_dir(fv[name].value, f"--{name}")


def run_main(
    body: Callable[[flags.FlagValues], Any],
    default_out: str,
    doc: str | None,
    argv: Sequence[str] | None = None,
    extra_flags: Callable[[flags.FlagValues], Any] | None = None,
) -> int:
    """A script's entry point: its flags, checked, then `body(flags)`; returns the exit code
    (2: a user mistake, reported in one line, nothing trained)."""
    from cascade import cli

    fv = define_flags(default_out)
    if extra_flags is not None:
        extra_flags(fv)

    def checked(args: cli.Args) -> None:
        check_flags(args.flags)
        body(args.flags)

    return cli.entry(checked, fv, doc, argv)


# -- configs and training ------------------------------------------------------------------------
def stage_config(
    name: str, preset: str, data_dir: str | Path, overrides: Mapping[str, Any] | None = None
) -> ml_collections.ConfigDict:
    """configs/<name>.py:<preset> on the shared data, with dotted overrides {"view.frames": 16}."""
    from cascade import config_checks, configs

    if preset not in PRESETS:
        raise configs.ConfigError(f"preset must be one of {PRESETS}, got {preset!r}.")
    config = configs.load(f"{name}:{preset}")
    config.data.update(data_dir=str(data_dir), **DATA[preset])
    config.train.num_samples = 0  # the experiments sample themselves
    for dotted, value in (overrides or {}).items():
        set_dotted(config, dotted, value)
    return config_checks.validate(config)


def set_dotted(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    """config["a"]["b"] = value for "a.b" (a locked config refuses unknown keys)."""
    *sections, key = dotted.split(".")
    target = config
    for part in sections:
        target = target[part]
    target[key] = value


def scaled_steps(preset_steps: int, scale: float) -> int:
    """`preset_steps` x `scale`, rounded, at least 1."""
    return max(1, int(round(preset_steps * scale)))


def set_steps(config: ml_collections.ConfigDict, steps: int) -> None:
    """Train for `steps`, keeping warm-up, logging and checkpoints within the run."""
    t = config.train
    t.steps = int(steps)
    t.warmup_steps = min(t.warmup_steps, max(steps // 10, 1))
    t.log_every = max(1, min(t.log_every, steps))
    t.checkpoint_every = max(1, min(t.checkpoint_every, steps))


def config_hash(config: ml_collections.ConfigDict) -> str:
    """8 hex digits over every field that changes the trained weights.

    A stage trained on another stage (the latent DiT on its VAE) names it by workdir; only
    the workdir's name (<label>-<hash>) enters, so moving the workdir root keeps the hash.
    """
    values = json.loads(config.to_json_best_effort())
    for dotted in NOT_HASHED:
        *sections, key = dotted.split(".")
        node = values
        for part in sections:
            node = node.get(part, {})
        node.pop(key, None)
    if "workdir" in values.get("vae", {}):
        values["vae"]["workdir"] = Path(values["vae"]["workdir"]).name
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


def workdir_for(root: str | Path, label: str, config: ml_collections.ConfigDict) -> Path:
    """root/<label>-<hash> as an absolute path (stored in the configs of dependent stages)."""
    return Path(root).expanduser().resolve() / f"{label}-{config_hash(config)}"


def train_stage(
    config: ml_collections.ConfigDict, root: str | Path, label: str
) -> tuple[Path, float]:
    """Train (or resume, or find already trained) `config` in root/<label>-<hash>.

    Returns (workdir, wall seconds of this call: ~0 when it was already trained).
    """
    from cascade.training.trainer import Trainer

    workdir = workdir_for(root, label, config)
    start = time.perf_counter()
    Trainer(config, workdir).train()
    return workdir, time.perf_counter() - start


class Stopwatch:
    """Wall seconds per named phase: `with watch("train base"): ...`; `watch.seconds` is a dict."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        return _Lap(self, name)


class _Lap:
    def __init__(self, watch: Stopwatch, name: str):
        self.watch, self.name = watch, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        elapsed = time.perf_counter() - self.start
        self.watch.seconds[self.name] = self.watch.seconds.get(self.name, 0.0) + elapsed
