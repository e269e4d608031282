"""Joint audio-video generation vs the two-stage baselines, on the same training budget.

    python -m experiments.av_joint_vs_two_stage --preset=cpu --seeds=2

For each seed, the AV DiT (configs/av_dit.py) is trained three times on bouncing_shapes with
sound, with the same network, data, batch and number of steps, only `config.av.mode` differing
(cascade.stages.av_dit):
  joint               both modalities generated together by one flow
  video_then_audio    video alone first, then the sound given the finished video
  audio_then_video    sound alone first, then the video given the finished sound
then each is evaluated with `--mode=evaluate`'s code (`cascade.evaluation.av_evaluate`) on the
same test windows: the sync metric (generated onsets vs impacts seen in the generated video),
audio statistics against the real tracks, FVD (Kinetics I3D) and the physics metrics.

A training step costs the same in every mode (same sequence, only the loss mask differs; XLA-
counted per mode in the results); a two-stage sample costs twice the joint one's network
evaluations (two passes). Trained stages live in hash-named workdirs (experiments/common.py),
so a killed run resumes and a finished stage or evaluation is reused.

Writes experiments/results/av_joint_vs_two_stage/<preset>/results.{md,csv,json},
metrics.png and one MP4 with sound per mode (seed 0, clip 0), with the commit, the CPU model
(lscpu), the seeds and the wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from experiments import common  # noqa: E402
from experiments.av_joint_vs_two_stage_report import summary_rows, write_outputs  # noqa: E402
from experiments.tables import environment  # noqa: E402

NAME = "av_joint_vs_two_stage"
MODES = ("joint", "video_then_audio", "audio_then_video")
# Per preset: stored data, the configs/av_dit.py preset + overrides, training steps and batch
# (equal for every mode), test clips evaluated, sampler steps, FVD videos per side (0: off).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {  # for the test: seconds, numbers meaningless (the av_dit tiny preset's data)
        "data": {"num_train": 4, "num_test": 6, "frames": 32, "resolution": 32},
        "base": "tiny",
        "view": {"frames": 4, "resolution": 16},
        "model": {},
        "train_steps": 4,
        "batch_size": 8,
        "clips": 3,
        "sample_steps": 4,
        "griffin_lim_iters": 4,
        "fvd_videos": 0,
    },
    "cpu": {  # sized for ~1 h on 2 idle cores (3 modes x 2 seeds)
        "data": {"num_train": 512, "num_test": 16, "frames": 24, "resolution": 16},
        "base": "quick",
        "view": {"frames": 16, "resolution": 16},
        "model": {"hidden_size": 128, "depth": 4, "num_heads": 4},
        "train_steps": 600,
        "batch_size": 8,
        "clips": 16,
        "sample_steps": 32,
        "griffin_lim_iters": 32,
        "fvd_videos": 16,
    },
}
DEFAULT_OUT = f"experiments/results/{NAME}"
EVAL_MARKER = "experiment_eval.json"  # in workdir/eval: what a finished evaluation measured


def stage_config(mode: str, seed: int, preset: str, data_dir: str | Path):
    """configs/av_dit.py at the preset's settings, trained with `seed` in `mode`."""
    from cascade import config_checks, configs

    p = PRESETS[preset]
    config = configs.load(f"av_dit:{p['base']}")
    config.seed = seed
    config.av.mode = mode
    config.data.update(data_dir=str(data_dir), **p["data"])
    config.view.update(**p["view"])
    config.model.update(**p["model"])
    config.sample.steps = p["sample_steps"]
    config.audio.griffin_lim_iters = p["griffin_lim_iters"]
    config.train.num_samples = 0  # the evaluation samples
    config.train.batch_size = p["batch_size"]
    common.set_steps(config, p["train_steps"])
    return config_checks.validate(config)


def evaluate(workdir: Path, config, p: dict[str, Any], cache) -> dict[str, Any]:
    """`av_evaluate.evaluate_av` of the trained stage in `workdir`, reused when a finished
    evaluation with the same clip and FVD counts is there."""
    from cascade.evaluation.av_evaluate import evaluate_av
    from cascade.training.trained import load_trained

    key = {"clips": p["clips"], "fvd_videos": p["fvd_videos"]}
    eval_dir = workdir / "eval"
    marker = eval_dir / EVAL_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == key:
        return json.loads((eval_dir / "metrics.json").read_text())
    trained = load_trained(workdir, config)
    # fvd_videos 0: FVD off (its reason is recorded in the metrics).
    evaluate_av(trained, workdir, p["clips"], fvd_videos=p["fvd_videos"], cache=cache)
    marker.write_text(json.dumps(key))
    return json.loads((eval_dir / "metrics.json").read_text())


def run_one(
    mode: str, seed: int, preset: str, data_dir, workdirs, cache, step_flops: dict[str, float]
) -> dict[str, Any]:
    """Train (or reuse) one mode with one seed and evaluate it. `step_flops`: XLA-counted
    training FLOPs per step by mode, filled once per mode (the seed does not change them)."""
    from cascade.evaluation import cost

    p = PRESETS[preset]
    config = stage_config(mode, seed, preset, data_dir)
    workdir, train_seconds = common.train_stage(config, workdirs, f"av_{mode}")
    metrics = evaluate(workdir, config, p, cache)
    if mode not in step_flops:
        step_flops[mode] = cost.train_step_flops(config)["flops_per_step"]
    return {
        "mode": mode,
        "seed": seed,
        "workdir": str(workdir),
        "train_steps": int(config.train.steps),
        "batch_size": int(config.train.batch_size),
        "train_seconds": train_seconds,
        "train_flops_per_step": step_flops[mode],
        "metrics": metrics,
    }


def copy_samples(runs: list[dict[str, Any]], out: Path) -> list[str]:
    """The first clip of seed 0 of every mode, as MP4 with sound: out/<mode>.mp4."""
    names = []
    for r in runs:
        if r["seed"] != 0:
            continue
        src = Path(r["workdir"]) / "samples" / "av_dit_final_0.mp4"
        shutil.copyfile(src, out / f"{r['mode']}.mp4")
        names.append(f"{r['mode']}.mp4")
    return names


def run(
    out: str | Path,
    *,
    preset: str = "tiny",
    seeds: int = 2,
    data_dir: str | Path = "results/data",
    workdirs: str | Path = "results/workdirs",
) -> dict[str, Any]:
    """Train and evaluate every mode with every seed; write the outputs; returns results.json's
    content."""
    from cascade.configs import ConfigError
    from cascade.evaluation.fvd import FeatureCache

    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}.")
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache, step_flops = FeatureCache(), {}
    runs = [
        run_one(mode, seed, preset, data_dir, workdirs, cache, step_flops)
        for seed in range(seeds)
        for mode in MODES
    ]
    result = {
        "experiment": NAME,
        "preset": preset,
        "preset_settings": PRESETS[preset],
        "seeds": list(range(seeds)),
        "runs": runs,
        "rows": summary_rows(runs, MODES),
        "samples": copy_samples(runs, out),
    }
    result["environment"] = environment(time.perf_counter() - start)
    result["markdown"] = write_outputs(out, result)
    return result


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    common.define_output_flags(fv, PRESETS, DEFAULT_OUT)
    flags.DEFINE_integer("seeds", 2, "Seeds per mode (0, 1, ...).", flag_values=fv)
    return fv


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    from cascade import cli

    def body(args: cli.Args) -> None:
        fv = args.flags
        if fv.seeds < 1:
            raise cli.UsageError(f"--seeds must be >= 1, got {fv.seeds}.")
        out = common.checked_out(fv, DEFAULT_OUT)
        result = run(
            out, preset=fv.preset, seeds=fv.seeds, data_dir=fv.data_dir, workdirs=fv.workdirs
        )
        print(result["markdown"])
        print(f"Results in {out}")

    return cli.entry(body, define_flags(), __doc__, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
