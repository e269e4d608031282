"""What the experiments share: the data they train on, stage configs, and training a config
(or distilling a trained stage) in a subfolder named by its hash. Tables and plots are
written by `experiments.tables`; FVD, FLOPs and content metrics come from `cascade.evaluation`
(the `--mode=evaluate` code).

Trained stages live in `workdirs/<label>-<hash>`, the hash covering every config field
that changes the trained weights (not the data_dir nor logging/checkpoint cadence). Two
experiments that ask for the same stage with the same settings therefore share one
trained workdir, an interrupted run resumes, and a changed setting never reuses a
checkpoint trained with another.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from experiments import content

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
    "train.keep_steps",
    "train.async_checkpointing",
    "train.num_samples",
    "train.sample_every",
)

# Fields added after workdirs were trained, left out of the hash while they hold the value
# that changes nothing (so every workdir trained before them keeps its name).
HASHED_UNLESS_DEFAULT = {"data.image_pool": 0, "sr.crop_frames": 0, "sr.residual": False}

# Stage settings frozen at what the committed experiment runs were trained with, where the
# preset has since moved on for the quickstart (both SR `quick` presets now train on frame
# windows, for more steps): every seed of an experiment must train the same stage.
PINNED = {
    ("quick", "temporal_sr"): {
        "sr.crop_frames": 0,
        "train.steps": 800,
        "model.num_classes": 0,
        "diffusion.label_dropout": 0.0,
        "sample.guidance_scale": 0.0,
    },
    ("quick", "spatial_sr"): {"sr.crop_frames": 0, "train.steps": 800},
}


# -- configs and training ------------------------------------------------------------------------
def stage_config(
    name: str,
    preset: str,
    data_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> ml_collections.ConfigDict:
    """configs/<name>.py:<preset> on the shared data (`data`: fields of config.data, default
    DATA[preset]), with dotted overrides {"view.frames": 16}, its channels and label classes
    those of the data set's clips (`content.match_data`)."""
    from cascade import config_checks, configs

    if preset not in PRESETS:
        raise configs.ConfigError(f"preset must be one of {PRESETS}, got {preset!r}.")
    config = configs.load(f"{name}:{preset}")
    config.data.update(data_dir=str(data_dir), **(DATA[preset] if data is None else data))
    config.train.num_samples = 0  # the experiments sample themselves
    for dotted, value in {**PINNED.get((preset, name), {}), **(overrides or {})}.items():
        set_dotted(config, dotted, value)
    content.match_data(config)  # after the overrides: they may name the data set
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
    """Train for `steps`, keeping warm-up, logging and checkpoints within the run; a
    checkpoint at least every quarter of the run (>= 50 steps), so a killed experiment
    loses little."""
    t = config.train
    t.steps = int(steps)
    t.warmup_steps = min(t.warmup_steps, max(steps // 10, 1))
    t.log_every = max(1, min(t.log_every, steps))
    t.checkpoint_every = max(1, min(t.checkpoint_every, steps, max(50, steps // 4)))


def _parent(values: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    """The dict holding `dotted` ("data.image_pool" -> values["data"], "image_pool")."""
    *sections, key = dotted.split(".")
    for part in sections:
        values = values.get(part, {})
    return values, key


def config_hash(config: ml_collections.ConfigDict) -> str:
    """8 hex digits over every field that changes the trained weights.

    A stage trained on another stage (the latent DiT on its VAE) names it by workdir; only
    the workdir's name (<label>-<hash>) enters, so moving the workdir root keeps the hash.
    """
    values = json.loads(config.to_json_best_effort())
    for dotted in NOT_HASHED:
        node, key = _parent(values, dotted)
        node.pop(key, None)
    for dotted, default in HASHED_UNLESS_DEFAULT.items():
        node, key = _parent(values, dotted)
        if node.get(key, default) == default:
            node.pop(key, None)
    if "workdir" in values.get("vae", {}):
        values["vae"]["workdir"] = Path(values["vae"]["workdir"]).name
    if "teacher_workdir" in values.get("distill", {}):
        values["distill"]["teacher_workdir"] = Path(values["distill"]["teacher_workdir"]).name
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


def workdir_for(root: str | Path, label: str, config: ml_collections.ConfigDict) -> Path:
    """root/<label>-<hash> as an absolute path (stored in the configs of dependent stages)."""
    return Path(root).expanduser().resolve() / f"{label}-{config_hash(config)}"


def train_stage(
    config: ml_collections.ConfigDict, root: str | Path, label: str
) -> tuple[Path, float]:
    """Train (or resume, or find already trained) `config` in root/<label>-<hash>.

    A finished stage has the marker `TRAINED` (written after its last checkpoint) and is not
    even opened again; an unfinished one resumes from its newest checkpoint.
    Returns (workdir, wall seconds of this call: 0 when it was already trained).
    """
    from cascade.training.trainer import Trainer

    workdir = workdir_for(root, label, config)
    if (workdir / TRAINED).is_file():
        return workdir, 0.0
    start = time.perf_counter()
    Trainer(config, workdir).train()
    seconds = time.perf_counter() - start
    (workdir / TRAINED).write_text(json.dumps({"steps": config.train.steps, "seconds": seconds}))
    return workdir, seconds


TRAINED = "trained.json"  # marker of a finished stage in its workdir


def trained_seconds(workdir: str | Path) -> float:
    """Wall seconds of the `train_stage` call that finished the stage in `workdir` (recorded
    in its marker; also when this call found it trained and returned 0)."""
    return float(json.loads((Path(workdir) / TRAINED).read_text())["seconds"])


def distill_config(
    teacher: str | Path,
    start_steps: int,
    end_steps: int,
    steps_per_round: int,
    preset: str,
    seed: int,
) -> ml_collections.ConfigDict:
    """configs/distill.py:<preset> distilling `teacher` from `start_steps` to `end_steps`."""
    from cascade import config_checks, configs

    config = configs.load(f"distill:{preset}")
    config.seed = seed
    config.distill.update(
        teacher_workdir=str(teacher),
        start_steps=start_steps,
        end_steps=end_steps,
        steps_per_round=steps_per_round,
    )
    config.train.num_samples = 0
    return config_checks.validate(config)


def train_distilled(config: ml_collections.ConfigDict, root: str | Path) -> tuple[Path, float]:
    """Distil `config` (a configs/distill.py config) in root/distilled-<hash>, like `train_stage`
    (resumed when interrupted, skipped when its marker is there)."""
    from cascade.training.distillation import DistillationTrainer

    workdir = workdir_for(root, "distilled", config)
    if (workdir / TRAINED).is_file():
        return workdir, 0.0
    start = time.perf_counter()
    DistillationTrainer(config, workdir).train()
    seconds = time.perf_counter() - start
    (workdir / TRAINED).write_text(json.dumps({"seconds": seconds}))
    return workdir, seconds


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


def define_output_flags(fv: Any, presets: Mapping[str, Any], default_out: str) -> None:
    """--preset, --out, --data_dir and --workdirs of a flag-driven experiment, on absl
    FlagValues `fv` (each script adds its own flags beside them)."""
    from absl import flags

    flags.DEFINE_enum("preset", "tiny", list(presets), "Preset (tiny: for tests).", flag_values=fv)
    flags.DEFINE_string(
        "out", "", f"Output folder (default {default_out}/<preset>).", flag_values=fv
    )
    flags.DEFINE_string("data_dir", "results/data", "TFDS data_dir (built there).", flag_values=fv)
    flags.DEFINE_string(
        "workdirs", "results/workdirs", "Trained stages (<label>-<hash>).", flag_values=fv
    )


def checked_out(fv: Any, default_out: str) -> Path:
    """The output folder of `define_output_flags`' flags, after checking that it, --workdirs
    and --data_dir can be written (cascade.cli.UsageError otherwise: one line, exit 2)."""
    from cascade import cli

    out = Path(fv.out or f"{default_out}/{fv.preset}")
    for path, flag in ((out, "--out"), (fv.workdirs, "--workdirs"), (fv.data_dir, "--data_dir")):
        cli.check_writable_dir(str(path), flag)  # as typed: Path("") would be "."
    return out
