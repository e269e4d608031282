"""What both experiments share: the data they train on, training a config in a subfolder,
the FLOPs of a training step, one FVD protocol with cached I3D features, and writing
tables (Markdown, CSV, JSON) and bar charts.

Trained stages live in `workdirs/<label>-<hash>`, the hash covering every config field
that changes the trained weights (not the data_dir nor logging/checkpoint cadence). Two
experiments that ask for the same stage with the same settings therefore share one
trained workdir, an interrupted run resumes, and a changed setting never reuses a
checkpoint trained with another.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
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
    from cascade import configs

    if preset not in PRESETS:
        raise configs.ConfigError(f"preset must be one of {PRESETS}, got {preset!r}.")
    config = configs.load(f"{name}:{preset}")
    config.data.update(data_dir=str(data_dir), **DATA[preset])
    config.train.num_samples = 0  # the experiments sample themselves
    for dotted, value in (overrides or {}).items():
        set_dotted(config, dotted, value)
    return configs.validate(config)


def set_dotted(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    """config["a"]["b"] = value for "a.b" (a locked config refuses unknown keys)."""
    *sections, key = dotted.split(".")
    target = config
    for part in sections:
        target = target[part]
    target[key] = value


def scaled_steps(preset_steps: int, scale: float) -> int:
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
    from cascade.train import Trainer

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


# -- cost ---------------------------------------------------------------------------------------
def train_step_flops(config: ml_collections.ConfigDict, stage: Any = None) -> dict[str, float]:
    """XLA FLOPs of one real training step (forward, backward, AdamW, EMA) of a stage config,
    lowered from shapes alone on one device (so the number does not depend on the mesh).

    `stage` defaults to `build_stage(config)`; pass one to avoid building its dependencies
    (e.g. a latent DiT stage built on a latent shape, without a trained VAE).
    """
    from cascade.evaluation import cost
    from cascade.stages import build_stage
    from cascade.train_state import init_state, make_optimizer, make_train_step, model_graphdef

    stage = stage or build_stage(config)
    tx = make_optimizer(config.train)
    state = jax.eval_shape(lambda k: init_state(stage, tx, k), jax.random.key(0))
    step = make_train_step(
        stage, model_graphdef(stage), tx, seed=0, ema_decay=config.train.ema_decay
    )
    batch = stage.batch_spec(config.train.batch_size)
    return cost.training_cost(
        step, (state, batch), num_steps=config.train.steps, batch_size=config.train.batch_size
    )


def model_flops(stage: Any, fn: Any, *inputs: Any) -> float:
    """XLA FLOPs of `fn(model, *inputs)` for a stage's freshly built (abstract) network."""
    from flax import nnx

    from cascade.evaluation import cost

    graphdef, params = nnx.split(nnx.eval_shape(lambda: stage.build_model(nnx.Rngs(0))))
    return cost.xla_flops(lambda p, *x: fn(nnx.merge(graphdef, p), *x), params, *inputs)["flops"]


# -- FVD ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _extractor(protocol: Any) -> Any:
    from cascade.evaluation.fvd import I3DFeatureExtractor

    return I3DFeatureExtractor(protocol)


class FVDScorer:
    """One FVD protocol for every comparison in an experiment; real features computed once.

    `score(real, fake)` -> dict(fvd, kvd, num_real, num_fake, protocol), or
    dict(fvd=None, reason=...) when FVD is disabled or the clips are too short for I3D.
    """

    MIN_FRAMES = 9  # the Kinetics I3D head needs at least 9 frames

    def __init__(self, num_videos: int, clip_length: int = 16):
        self.num_videos = num_videos
        self.clip_length = clip_length
        self._real: dict[str, np.ndarray] = {}

    def score(self, real: np.ndarray, fake: np.ndarray) -> dict[str, Any]:
        from cascade.evaluation.fvd import FVDProtocol, fvd_from_features

        n = min(len(real), len(fake), self.num_videos)
        frames = min(real.shape[1], fake.shape[1])
        if n < 2:
            return {"fvd": None, "reason": f"FVD off: {n} videos per side (needs >= 2)"}
        if frames < max(self.MIN_FRAMES, self.clip_length):
            return {
                "fvd": None,
                "reason": f"{frames}-frame clips are shorter than the protocol's "
                f"{max(self.MIN_FRAMES, self.clip_length)} frames",
            }
        if real.shape[2:] != fake.shape[2:]:
            raise ValueError(f"real {real.shape} and fake {fake.shape} differ in H, W, C")
        protocol = FVDProtocol(num_videos=n, clip_length=self.clip_length, batch_size=min(8, n))
        extractor = _extractor(protocol)
        key = hashlib.sha1(np.ascontiguousarray(real[:n]).tobytes()).hexdigest() + repr(protocol)
        if key not in self._real:
            self._real[key] = extractor(real[:n])
        return fvd_from_features(self._real[key], extractor(fake[:n]), protocol)


# -- tables and plots ----------------------------------------------------------------------------
def finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)


def fmt(value: Any) -> str:
    """Numbers to 4 significant digits (large ones in e-notation); None/NaN as 'n/a'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(value) < 1e7 else f"{float(value):.3e}"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3e}" if abs(value) >= 1e6 else f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [fmt(row.get(c)).replace("|", "/") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Raw values (full precision; empty cell for None)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None  # JSON has no NaN
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, result: Any) -> None:
    Path(path).write_text(json.dumps(to_jsonable(result), indent=2))


def bar_panels(
    path: str | Path, panels: Sequence[Mapping[str, Any]], title: str, ncols: int = 2
) -> None:
    """One bar chart per panel {title, labels, values, ylabel (optional)}; a missing
    (None/NaN) value is drawn as an empty slot labelled 'n/a'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        values = [float(v) if finite(v) else np.nan for v in panel["values"]]
        positions = np.arange(len(values))
        bars = ax.bar(positions, np.nan_to_num(values, nan=0.0), color="C0")
        for bar, value in zip(bars, values, strict=True):
            label = "n/a" if np.isnan(value) else fmt(value)
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xticks(positions, panel["labels"], fontsize=8)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel(panel.get("ylabel", ""))
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
