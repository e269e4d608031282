"""Long videos, 8x the trained length: causal DiT rollout vs bidirectional DiT vs the cascade.

    python -m experiments.long_video --preset=cpu [--train_seeds=3] [--seeds=N] [--out=...]
        [--datasets=bouncing_shapes,moving_digits]

For moving_digits and bouncing_shapes and each training seed, the models are trained (or
reused: workdirs are named by config hash) on clips of T frames (the same T, resolution and
stride for all): a video VAE shared by both DiTs, then

  causal_dit     the causal latent DiT (configs/causal_dit.py), rolled out chunk by chunk
                 with its KV cache (`cascade.sampling.rollout.ChunkRollout`);
  latent_dit     the bidirectional latent DiT, extended window by window by replacement of
                 the last latent frames (`conditional.extend_video`);
  cascade        the cascade's keyframe stage, extended window by window with VDM
                 reconstruction guidance (w_r = 2, `conditional.extend`).

All three continue the same given frames: the first G = 1 + 4 (g - 1) frames of the same
test clips (g = half the trained latent frames, rounded up; the DiTs see them as g latent
frames: the causal DiT's rollout puts them in its KV cache as context, the bidirectional DiT
and the keyframe stage condition their first window on them) up to 8 T frames.

Measured along time, in windows of T frames (metric vs window start frame) and over the whole
clip (`experiments.long_video_metrics`): bouncing_shapes physics (teleports, permanence
violations after occlusion, gravity fit error, object count drift) and shape identity;
moving_digits digit identity stability, motion residual and digit count drift; per-window FVD
(Kinetics I3D, T-frame windows vs real T-frame windows); sampling seconds (warm: compilation
excluded) and XLA FLOPs per generated frame. Each metric is averaged over clips, then over
training seeds (± their std); each method's whole-clip metrics are compared with the
bidirectional DiT's by a 95% hierarchical bootstrap (training seeds, then clips; paired:
every method continues the same clips). Each (data set, training seed) is a run of its own
under OUT/runs/ (`runs.RunStore`), read back on a rerun; --datasets picks the data sets
(each can run as its own command into the same OUT, and a later call with both reads every
finished run back). Writes
experiments/results/long_video/<preset>/results.{md,csv,json}, differences.csv,
metrics_vs_frame.png and side_by_side_<dataset>.{gif,mp4} (`experiments.long_video_report`),
with the commit, CPU model, seeds and wall time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from experiments import common, runs  # noqa: E402
from experiments.long_video_generation import (  # noqa: E402
    LENGTH,
    REAL_VIEW_SEED,
    W_R,
    Lengths,
    generate,
    given_clips,
)
from experiments.long_video_metrics import generation_flops, long_video_metrics  # noqa: E402
from experiments.long_video_models import model_configs, train_models  # noqa: E402
from experiments.long_video_report import write_outputs  # noqa: E402
from experiments.long_video_summary import differences, summarize_method  # noqa: E402
from experiments.tables import environment  # noqa: E402

NAME = "long_video"
DATASETS = ("bouncing_shapes", "moving_digits")
METHODS = ("causal_dit", "latent_dit", "cascade")
# Per preset: the stored data, the stage presets (`base`, experiments/common.py) and overrides
# per model, training steps per model, clips continued, sampler steps, FVD videos (0: off).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {  # for the test: seconds, numbers meaningless
        "base": "tiny",
        "data": {"num_train": 16, "num_test": 8, "frames": 16, "resolution": 16},
        "frames": 5,  # T: 2 latent frames
        "resolution": 8,  # latents 2 x 2: one DiT token per latent frame
        "models": {"video_vae": {}, "latent_dit": {}, "keyframes": {}},
        "train_steps": {"video_vae": 2, "latent_dit": 2, "causal_dit": 2, "keyframes": 2},
        "batch_size": 8,
        "clips": 2,
        "sample_steps": {"dit": 2, "keyframes": 2},
        "fvd_videos": 0,
        "train_seeds": 1,
        "bootstrap": 50,
    },
    "cpu": {  # ~20 min per data set and training seed, idle (training 8-14, measuring 7-8)
        "base": "quick",
        "data": {"num_train": 512, "num_test": 16, "frames": 32, "resolution": 16},
        "frames": 9,  # T: 3 latent frames, 2 given; 72 frames generated
        "resolution": 16,
        "models": {
            "video_vae": {},
            "latent_dit": {"hidden_size": 96, "depth": 4, "num_heads": 4},
            "keyframes": {"base_channels": 16, "norm_groups": 4, "num_heads": 1},
        },
        # The VAE at 500 steps reconstructed none of bouncing_shapes' objects at 16x16 (0 of 1.75
        # per clip on 16 test clips, 18.3 dB), at 1500 1.38 (22.3 dB), at 3000 1.63 (24.8 dB).
        "train_steps": {"video_vae": 3000, "latent_dit": 600, "causal_dit": 600, "keyframes": 300},
        "batch_size": 8,
        "clips": 16,
        "sample_steps": {"dit": 16, "keyframes": 20},
        "fvd_videos": 8,
        "train_seeds": 3,
        "bootstrap": 1000,
    },
}
DEFAULT_OUT = f"experiments/results/{NAME}"
# Bumped when the measurement changes, so runs measured before are measured again (2: the
# whole-clip metrics on the generated frames only, empty_scene, violations of an empty clip
# undefined).
METRICS_VERSION = 2


def measure_train_seed(
    dataset: str, train_seed: int, preset: str, seeds: int, data_dir, workdirs, fvd_cache
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The models trained (or reused) at `train_seed` on `dataset`, the test clips continued by
    each method for every sampling seed (keys 0..seeds-1), the long clips measured. Arrays per
    method: '<method>__whole__<metric>' [seeds * N] and '__windows__<metric>' [windows,
    seeds * N] per clip, '__preview' (the first SHOWN_CLIPS clips, uint8); info: the models'
    workdirs and steps, and per method the metrics (`long_video_metrics`, without per_clip)
    and its cost per generated frame."""
    import jax

    from cascade import video_io
    from cascade.sampling.rollout import ChunkRollout
    from cascade.training.trained import load_trained

    p = PRESETS[preset]
    models = train_models(
        dataset, model_configs(dataset, p, data_dir, workdirs, train_seed), workdirs
    )
    trained = {
        "cascade": load_trained(models["keyframes"][1], models["keyframes"][0]),
        "latent_dit": load_trained(models["latent_dit"][1], models["latent_dit"][0]),
        "causal_dit": load_trained(models["causal_dit"][1], models["causal_dit"][0]),
    }
    samplers = {**trained, "causal_dit": ChunkRollout(trained["causal_dit"])}
    causal = trained["causal_dit"].stage
    lengths = Lengths(p["frames"], causal.output_shape[0], causal.spec.chunk_shape[0])
    real, first, labels = given_clips(dataset, models["keyframes"][0], lengths, p["clips"])
    arrays, methods = {}, {}
    for method in METHODS:
        # Compile first, so the timed runs below measure sampling, not compilation.
        generate(method, samplers[method], first, labels, jax.random.key(0), lengths, True)
        videos, seconds = [], 0.0
        for seed in range(seeds):
            start = time.perf_counter()
            videos.append(
                generate(method, samplers[method], first, labels, jax.random.key(seed), lengths)
            )
            seconds += time.perf_counter() - start
        video = np.concatenate(videos)  # [seeds * N, target, ...]: seed-major
        generated = seeds * len(first) * (lengths.target - lengths.given)
        flops = generation_flops(method, trained[method], first, lengths)
        metrics = long_video_metrics(
            video,
            real,
            dataset=dataset,
            window=p["frames"],
            given=lengths.given,
            labels=None if labels is None else np.tile(labels, seeds),
            fvd_videos=p["fvd_videos"],
            cache=fvd_cache,
        )
        for view, values in metrics.pop("per_clip").items():
            arrays.update({f"{method}__{view}__{k}": v for k, v in values.items()})
        shown = video[:SHOWN_CLIPS]  # uint8 as the videos are written; channels kept
        arrays[f"{method}__preview"] = video_io.to_uint8(shown)[..., : shown.shape[-1]]
        methods[method] = {
            "metrics": metrics,
            "seconds_per_frame": seconds / generated,
            "flops_per_frame": flops["flops"] / (len(first) * (lengths.target - lengths.given)),
            "loops_counted_once": flops["loops_counted_once"],
        }
    return arrays, {
        "train_seed": train_seed,
        "lengths": {"frames": lengths.frames, "latents": lengths.latents, "chunk": lengths.chunk},
        "workdirs": {name: str(m[1]) for name, m in models.items()},
        "train_steps": {name: int(m[0].train.steps) for name, m in models.items()},
        "train_seconds": {name: common.trained_seconds(m[1]) for name, m in models.items()},
        "methods": methods,
    }


SHOWN_CLIPS = 2  # clips of each method kept for the side-by-side videos


def run_dataset(
    dataset: str, preset: str, train_seeds: int, seeds: int, data_dir, workdirs, fvd_cache, store
) -> dict[str, Any]:
    """Every training seed on `dataset` (finished ones read back from `store`), summarised:
    per method the metrics averaged over training seeds (and per seed), and each method's
    whole-clip metrics against the bidirectional DiT's with a bootstrap interval."""
    per_seed = [
        store.get(
            f"{dataset}/train{t}-sampling{seeds}",
            lambda t=t: measure_train_seed(
                dataset, t, preset, seeds, data_dir, workdirs, fvd_cache
            ),
        )
        for t in range(train_seeds)
    ]
    first_info = per_seed[0][1]
    lengths = Lengths(**first_info["lengths"])
    kf_config = model_configs(dataset, PRESETS[preset], data_dir, workdirs)["keyframes"]
    real, first, _ = given_clips(dataset, kf_config, lengths, PRESETS[preset]["clips"])
    results = [
        summarize_method(
            method,
            [info["methods"][method] for _, info in per_seed],
            per_seed[0][0][f"{method}__preview"],
        )
        for method in METHODS
    ]
    return {
        "dataset": dataset,
        "train_seeds": [info for _, info in per_seed],
        "train_steps": first_info["train_steps"],
        "window": PRESETS[preset]["frames"],
        "latents": lengths.latents,
        "given": lengths.given,
        "given_latents": lengths.given_latents,
        "target": lengths.target,
        "clips": int(len(first)),
        "real_frames": int(real.shape[1]),
        "real": real,
        "results": results,
        "differences": differences(
            dataset, METHODS, [arrays for arrays, _ in per_seed], PRESETS[preset]["bootstrap"]
        ),
    }


def run(
    out: str | Path,
    *,
    preset: str = "tiny",
    seeds: int = 1,
    train_seeds: int | None = None,
    data_dir: str | Path = "results/data",
    workdirs: str | Path = "results/workdirs",
    datasets: tuple[str, ...] = DATASETS,
) -> dict[str, Any]:
    """Train, generate, measure `datasets` (default both) at `train_seeds` training seeds
    (default: the preset's) and `seeds` sampling seeds each; write the outputs; returns
    results.json's content (plus the markdown)."""
    from cascade.evaluation.fvd import FeatureCache

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_seeds = train_seeds or PRESETS[preset]["train_seeds"]
    store = runs.RunStore(out / "runs", fingerprint(preset))
    cache = FeatureCache()
    datasets = [
        run_dataset(d, preset, train_seeds, seeds, data_dir, workdirs, cache, store)
        for d in DATASETS
        if d in datasets  # in DATASETS' order, whatever order they were asked in
    ]
    result = {
        "experiment": NAME,
        "preset": preset,
        "preset_settings": PRESETS[preset],
        "seeds": {
            "train": list(range(train_seeds)),
            "sampling": list(range(seeds)),
            "real_view": REAL_VIEW_SEED,
        },
        "length": LENGTH,
        "w_r": W_R,
        "datasets": datasets,
        "runs": {"reused": store.reused, "computed": store.computed},
    }
    result["environment"] = environment(time.perf_counter() - start)
    result["markdown"] = write_outputs(out, result)
    return result


def fingerprint(preset: str) -> str:
    """What a finished run depends on: the preset's settings (less the seed count and the
    bootstrap), the methods and lengths, and the stage presets the models start from."""
    settings = {k: v for k, v in PRESETS[preset].items() if k not in ("train_seeds", "bootstrap")}
    exp = {"preset": settings, "methods": METHODS, "length": LENGTH, "w_r": W_R}
    exp["metrics_version"] = METRICS_VERSION
    base = PRESETS[preset]["base"]
    stages = ("video_vae", "latent_dit", "causal_dit", "keyframes")
    hashes = {s: common.config_hash(common.stage_config(s, base, "fingerprint")) for s in stages}
    return runs.fingerprint({**exp, "real_view_seed": REAL_VIEW_SEED}, hashes)


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    common.define_output_flags(fv, PRESETS, DEFAULT_OUT)
    flags.DEFINE_integer(
        "seeds",
        1,
        "Sampling seeds (keys 0..N-1) per method and training seed.",
        lower_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "train_seeds",
        None,
        "Training seeds (default: the preset's, tiny 1, cpu 3); each trains every model anew; "
        "finished ones are read back from OUT/runs.",
        lower_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_list(
        "datasets",
        list(DATASETS),
        f"Data sets to run and report, comma-separated (of {', '.join(DATASETS)}).",
        flag_values=fv,
    )
    return fv


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    from cascade import cli

    def body(args: cli.Args) -> None:
        fv = args.flags
        unknown = sorted(set(fv.datasets) - set(DATASETS))
        if unknown or not fv.datasets:
            raise cli.UsageError(
                f"--datasets={','.join(fv.datasets)}: "
                f"{'unknown ' + ', '.join(unknown) if unknown else 'none given'}; "
                f"choose from {','.join(DATASETS)}"
            )
        out = common.checked_out(fv, DEFAULT_OUT)
        result = run(
            out,
            preset=fv.preset,
            seeds=fv.seeds,
            train_seeds=fv.train_seeds,
            data_dir=fv.data_dir,
            workdirs=fv.workdirs,
            datasets=tuple(fv.datasets),
        )
        print(result["markdown"])
        print(f"Results in {out}")

    return cli.entry(body, define_flags(), __doc__, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
