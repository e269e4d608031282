"""`make quickstart`: build the embedded data, train a tiny cascade, sample it, measure it.

    python -m cascade.quickstart --out=results/quickstart

Steps (each resumes if its output already exists, so a rerun finishes quickly):
  1. build moving_digits and bouncing_shapes into OUT/data, write previews;
  2. train the base, temporal-SR and spatial-SR stages (`quick` presets) in OUT/<stage>;
  3. run the cascade, writing videos of every stage to OUT/cascade;
  4. evaluate: FVD/KVD of the cascade's videos against real test clips, each SR
     stage against its trivial baseline (PSNR/SSIM), parameters and timings -> OUT/metrics.json.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

_OUT = flags.DEFINE_string(
    "out", "results/quickstart", "Folder for data, workdirs, videos, metrics."
)
_STEPS = flags.DEFINE_integer(
    "steps", None, "Override training steps of every stage (default: presets)."
)
_NUM_VIDEOS = flags.DEFINE_integer("num_videos", 16, "Cascade videos to sample and evaluate.")
_FVD_VIDEOS = flags.DEFINE_integer(
    "fvd_videos", 16, "Videos per side for FVD (I3D is ~2.6 s/clip on 2 cores)."
)

STAGES = ("base", "temporal_sr", "spatial_sr")


def stage_config(name: str, data_dir: Path, steps: int | None):
    from cascade import configs

    config = configs.load(f"{name}:quick")
    config.data.data_dir = str(data_dir)
    if steps is not None:
        config.train.steps = steps
        config.train.checkpoint_every = min(config.train.checkpoint_every, steps)
        config.train.warmup_steps = min(config.train.warmup_steps, max(steps // 10, 1))
    return config


def run(out: Path, *, steps: int | None, num_videos: int, fvd_videos: int) -> dict:
    from cascade import configs
    from cascade.data.__main__ import build_and_preview
    from cascade.evaluation.evaluate import evaluate_outputs, evaluate_super_resolution
    from cascade.runners import CascadeRunner
    from cascade.train import Trainer

    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    report: dict = {"seconds": {}}
    tick = time.perf_counter()
    base_data = stage_config("base", data_dir, steps).data
    for dataset in ("moving_digits", "bouncing_shapes"):
        build_and_preview(dataset, base_data, data_dir / "previews" / f"{dataset}.gif")
    report["seconds"]["data"] = time.perf_counter() - tick

    for name in STAGES:
        tick = time.perf_counter()
        Trainer(stage_config(name, data_dir, steps), out / name).train()
        report["seconds"][f"train_{name}"] = time.perf_counter() - tick

    config = configs.load("cascade:quick")
    for name in STAGES:
        config.stages[name].workdir = str(out / name)
    tick = time.perf_counter()
    runner = CascadeRunner(config)
    written = runner.write(out / "cascade", num_videos)
    outputs = written.pop("outputs")
    report["seconds"]["cascade_sampling"] = time.perf_counter() - tick
    report["cascade_timing"] = written
    report["params"] = runner.params()

    tick = time.perf_counter()
    report["cascade"] = evaluate_outputs(
        outputs, runner.final_config, runner.labels(num_videos), max_fvd_videos=fvd_videos
    )
    report["super_resolution"] = {
        name: evaluate_super_resolution(runner.stages[i][1], num_videos)
        for i, name in enumerate(STAGES)
        if i > 0
    }
    report["seconds"]["evaluation"] = time.perf_counter() - tick
    (out / "metrics.json").write_text(json.dumps(report, indent=2, default=float))
    return report


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax/tfds INFO lines drown the progress bar
    del argv
    out = Path(_OUT.value)
    start = time.perf_counter()
    report = run(
        out, steps=_STEPS.value, num_videos=_NUM_VIDEOS.value, fvd_videos=_FVD_VIDEOS.value
    )
    print(
        json.dumps({k: report[k] for k in ("cascade", "super_resolution")}, indent=2, default=float)
    )
    print(
        f"\nDone in {(time.perf_counter() - start) / 60:.1f} min. Videos: {out / 'cascade'}/final.gif, "
        f"all stages side by side: {out / 'cascade'}/stages.gif, metrics: {out / 'metrics.json'}"
    )


if __name__ == "__main__":
    app.run(main)
