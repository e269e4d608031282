"""Long videos, 8x the trained length: causal DiT rollout vs bidirectional DiT vs the cascade.

    python -m experiments.long_video --preset=cpu [--seeds=N] [--out=...]

For moving_digits and bouncing_shapes, three models are trained (or reused: workdirs are
named by config hash) on clips of T frames (the same T, resolution and stride for all):
a video VAE shared by both DiTs, then

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
excluded) and XLA FLOPs per generated frame. Writes
experiments/results/long_video/<preset>/results.{md,csv,json}, metrics_vs_frame.png and
side_by_side_<dataset>.{gif,mp4} (`experiments.long_video_report`), with the commit, CPU
model, seeds and wall time.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from experiments import common  # noqa: E402
from experiments.long_video_metrics import generation_flops, long_video_metrics  # noqa: E402
from experiments.long_video_report import write_outputs  # noqa: E402
from experiments.tables import environment  # noqa: E402

NAME = "long_video"
DATASETS = ("bouncing_shapes", "moving_digits")
METHODS = ("causal_dit", "latent_dit", "cascade")
LENGTH = 8  # generated clips are LENGTH x the trained length
W_R = 2.0  # reconstruction guidance weight of the cascade (VDM: w_r > 1 helps)
TRAIN_SEED = 0
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
    },
    "cpu": {  # sized (not yet measured) for <= ~60 min on 2 idle cores
        "base": "quick",
        "data": {"num_train": 512, "num_test": 16, "frames": 32, "resolution": 16},
        "frames": 9,  # T: 3 latent frames, 2 given; 72 frames generated
        "resolution": 16,
        "models": {
            "video_vae": {},
            "latent_dit": {"hidden_size": 96, "depth": 4, "num_heads": 4},
            "keyframes": {"base_channels": 16, "norm_groups": 4, "num_heads": 1},
        },
        "train_steps": {"video_vae": 500, "latent_dit": 600, "causal_dit": 600, "keyframes": 300},
        "batch_size": 8,
        "clips": 16,
        "sample_steps": {"dit": 16, "keyframes": 20},
        "fvd_videos": 8,
    },
}
DEFAULT_OUT = f"experiments/results/{NAME}"


def model_configs(dataset: str, preset: str, data_dir, workdirs) -> dict[str, Any]:
    """Train (or reuse) the VAE, both DiTs and the keyframe stage on `dataset`; returns
    {name: (config, workdir, train seconds)} (names: video_vae, latent_dit, causal_dit,
    keyframes)."""
    p = PRESETS[preset]
    rgb = dataset == "bouncing_shapes"
    view = {"view.frames": p["frames"], "view.resolution": p["resolution"], "view.frame_stride": 1}
    view["view.channels"] = 3 if rgb else 1
    base = {"seed": TRAIN_SEED, "data.name": dataset, "train.batch_size": p["batch_size"]}

    def train(name: str, label: str, overrides: dict[str, Any]):
        config = common.stage_config(name, p["base"], data_dir, {**base, **overrides}, p["data"])
        common.set_steps(config, p["train_steps"][name])
        workdir, seconds = common.train_stage(config, workdirs, f"{label}_{dataset}")
        return config, workdir, seconds

    models = {}
    vae = {**view, **_model(p["models"]["video_vae"]), "model.in_channels": view["view.channels"]}
    models["video_vae"] = train("video_vae", "lv_vae", vae)
    dit = {**view, **_model(p["models"]["latent_dit"]), "vae.workdir": str(models["video_vae"][1])}
    dit["sample.steps"] = p["sample_steps"]["dit"]
    if rgb:  # unconditional: no labels to drop
        dit.update({"model.num_classes": 0, "flow.label_dropout": 0.0})
    models["latent_dit"] = train("latent_dit", "lv_dit", dit)
    models["causal_dit"] = train("causal_dit", "lv_causal", dit)
    kf = {**view, **_model(p["models"]["keyframes"]), "model.image_size": p["resolution"]}
    kf["sample.steps"] = p["sample_steps"]["keyframes"]
    if rgb:
        kf.update({"model.in_channels": 3, "model.out_channels": 3, "model.num_classes": 0})
        kf["diffusion.label_dropout"] = 0.0
    models["keyframes"] = train("keyframes", "lv_keyframes", kf)
    return models


def _model(fields: dict[str, Any]) -> dict[str, Any]:
    return {f"model.{k}": v for k, v in fields.items()}


class Lengths:
    """Frame counts of the experiment from the trained pixel length T and latent frames n:
    G given pixel frames (g latents), target = LENGTH x T pixel frames; each method generates
    at least `target` frames (its own stride) and is cut to `target`."""

    def __init__(self, frames: int, latents: int, chunk: int):
        self.frames, self.latents = frames, latents
        self.given_latents = (latents + 1) // 2
        self.given = 1 + 4 * (self.given_latents - 1)  # the causal VAE's 1 + 4k frames
        self.target = LENGTH * frames
        # Latents decoding to >= target frames, whole chunks for the causal rollout.
        self.chunks = math.ceil((math.ceil((self.target - 1) / 4) + 1) / chunk)
        stride = latents - self.given_latents  # the bidirectional DiT's window stride
        self.dit_latents = self.given_latents + stride * math.ceil(
            (self.chunks * chunk - self.given_latents) / stride
        )
        kf_stride = frames - self.given
        self.keyframes = self.given + kf_stride * math.ceil((self.target - self.given) / kf_stride)


def generate(
    method: str, trained, first: np.ndarray, labels, key, lengths: Lengths, warmup: bool = False
) -> np.ndarray:
    """One method's long clips [N, target, H, W, C] in [-1, 1] from the given frames
    first [N, G, H, W, C]; `trained` is the causal DiT's `ChunkRollout` (built once: its jitted
    steps are compiled on the first call) or the other methods' trained stage. warmup: only
    compile (the cascade's one window, which every window reuses; the DiTs' whole run, as
    their VAE decode compiles per length); returns what was generated."""
    from cascade.sampling import conditional

    n = len(first)
    if method == "cascade":
        target = lengths.frames if warmup else lengths.keyframes
        video = conditional.extend(
            trained, first, target, overlap=lengths.given, key=key,
            method="reconstruction", w_r=W_R, labels=labels,
        )  # fmt: skip
    elif method == "latent_dit":
        video, _ = conditional.extend_video(
            trained, first, lengths.dit_latents, overlap=lengths.given_latents, key=key,
            method="replacement", labels=labels,
        )  # fmt: skip
    else:
        stage = trained.stage
        cond = {"label": np.zeros(n, np.int32) if labels is None else np.asarray(labels, np.int32)}
        given = stage.frames_to_outputs(first)
        latents = trained.latents(cond, key, lengths.chunks, given=given)
        video = stage.vae.decode_long(latents)
    if warmup:
        return video
    if video.shape[1] < lengths.target:
        raise AssertionError(f"{method}: {video.shape[1]} < {lengths.target} frames generated")
    return video[:, : lengths.target]


def run_dataset(dataset: str, preset: str, seeds: int, data_dir, workdirs, fvd_cache):
    """Train (or reuse) the three models on `dataset`, continue the test clips with each for
    every sampling seed, and measure the long clips."""
    import jax

    from cascade.data import pipeline
    from cascade.evaluation import continuation
    from cascade.sampling.rollout import ChunkRollout
    from cascade.training.trained import load_trained

    p = PRESETS[preset]
    models = model_configs(dataset, preset, data_dir, workdirs)
    trained = {
        "cascade": load_trained(models["keyframes"][1], models["keyframes"][0]),
        "latent_dit": load_trained(models["latent_dit"][1], models["latent_dit"][0]),
        "causal_dit": load_trained(models["causal_dit"][1], models["causal_dit"][0]),
    }
    samplers = {**trained, "causal_dit": ChunkRollout(trained["causal_dit"])}
    causal = trained["causal_dit"].stage
    lengths = Lengths(p["frames"], causal.output_shape[0], causal.spec.chunk_shape[0])
    kf_config = models["keyframes"][0]
    clips = pipeline.test_clips(kf_config.data, p["clips"])
    real = continuation.real_view(clips["video"], kf_config, lengths.target, TRAIN_SEED)
    first = real[:, : lengths.given]
    labels = clips["label"] if dataset == "moving_digits" else None
    results = []
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
        results.append(
            {
                "method": method,
                "video": video,
                "seconds_per_frame": seconds / generated,
                "flops_per_frame": flops["flops"] / (len(first) * (lengths.target - lengths.given)),
                "loops_counted_once": flops["loops_counted_once"],
                "metrics": long_video_metrics(
                    video,
                    real,
                    dataset=dataset,
                    window=p["frames"],
                    labels=None if labels is None else np.tile(labels, seeds),
                    fvd_videos=p["fvd_videos"],
                    cache=fvd_cache,
                ),
            }
        )
    return {
        "dataset": dataset,
        "workdirs": {name: str(m[1]) for name, m in models.items()},
        "train_steps": {name: int(m[0].train.steps) for name, m in models.items()},
        "train_seconds": {name: m[2] for name, m in models.items()},
        "window": p["frames"],
        "latents": lengths.latents,
        "given": lengths.given,
        "given_latents": lengths.given_latents,
        "target": lengths.target,
        "clips": int(len(first)),
        "real_frames": int(real.shape[1]),
        "real": real,
        "results": results,
    }


def run(
    out: str | Path,
    *,
    preset: str = "tiny",
    seeds: int = 1,
    data_dir: str | Path = "results/data",
    workdirs: str | Path = "results/workdirs",
) -> dict[str, Any]:
    """Train, generate, measure both data sets; write the outputs; returns results.json's
    content (plus the markdown)."""
    from cascade.evaluation.fvd import FeatureCache

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = FeatureCache()
    datasets = [run_dataset(d, preset, seeds, data_dir, workdirs, cache) for d in DATASETS]
    result = {
        "experiment": NAME,
        "preset": preset,
        "preset_settings": PRESETS[preset],
        "seeds": {"train": TRAIN_SEED, "sampling": list(range(seeds)), "real_view": TRAIN_SEED},
        "length": LENGTH,
        "w_r": W_R,
        "datasets": datasets,
    }
    result["environment"] = environment(time.perf_counter() - start)
    result["markdown"] = write_outputs(out, result)
    return result


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    common.define_output_flags(fv, PRESETS, DEFAULT_OUT)
    flags.DEFINE_integer(
        "seeds", 1, "Sampling seeds (keys 0..N-1) per method.", lower_bound=1, flag_values=fv
    )
    return fv


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    from cascade import cli

    def body(args: cli.Args) -> None:
        fv = args.flags
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
