"""Runners chain trained stages into videos: the cascade (keyframes -> TSR -> SSR) and the
single-stage path (latent DiT -> VAE decode). Both write the same outputs
(`video_io.write_run_outputs`): the final videos, every intermediate, a side-by-side strip of
all stages, and per-stage wall time. `sample_to_files` is the one-stage `--mode=sample`.
"""

from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from cascade import video_io
from cascade.configs import ConfigError, check_choice
from cascade.data import pipeline
from cascade.sampling import conditional
from cascade.stages import build_stage
from cascade.stages.latent_dit import FLOW_SAMPLERS
from cascade.training import parallel
from cascade.training.train_state import count_params
from cascade.training.trained import TrainedStage, config_from_checkpoint, load_trained


class Runner(abc.ABC):
    """A chain of trained stages sampled into videos from test-split labels.

    Subclasses build their stages from `config` and define `sample`, `final_config` and
    `params`; `sample_many` batches the labels and `write` writes the outputs.
    """

    config: ml_collections.ConfigDict

    @abc.abstractmethod
    def sample(
        self, labels: np.ndarray, key: jax.Array
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Videos for labels [B]: every stage's output [B,T,H,W,C] (in run order, the final
        videos last) and each stage's wall seconds."""

    @property
    @abc.abstractmethod
    def final_config(self) -> ml_collections.ConfigDict:
        """Config of the stage whose view the final videos have (frames, resolution, data)."""

    @abc.abstractmethod
    def params(self) -> dict[str, int]:
        """Parameter count per trained network and their "total"."""

    def extend(
        self,
        first_frames: np.ndarray,
        target_frames: int,
        *,
        overlap: int,
        key: jax.Array,
        method: str,
        w_r: float = 0.0,
        labels: np.ndarray | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Continue first_frames [B,c,H,W,C] (the first stage's frames) to `target_frames`
        of the first stage autoregressively (`conditional`), then run the rest of the chain
        over the long clip; every stage's output and wall seconds, as `sample` returns."""
        raise ConfigError(f"a {self.config.stage} runner cannot extend videos")

    def labels(self, num: int) -> np.ndarray:
        """Labels of the first `num` test clips in stored order (`pipeline.test_clips`): video i
        is conditioned on the label of real clip i, the one evaluation compares it with."""
        return np.asarray(pipeline.test_clips(self.final_config.data, num)["label"], np.int32)

    def sample_many(self, num: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """`num` videos in batches of `config.batch_size`: outputs by stage, seconds by stage."""
        labels = self.labels(num)
        key = jax.random.key(self.config.seed)
        chunks: list[dict[str, np.ndarray]] = []
        seconds: dict[str, float] = {}
        size = self.config.batch_size
        for i, start in enumerate(range(0, num, size)):
            out, sec = self.sample(labels[start : start + size], jax.random.fold_in(key, i))
            chunks.append(out)
            for k, v in sec.items():
                seconds[k] = seconds.get(k, 0.0) + v
        outputs = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        return outputs, seconds

    def write(self, out_dir: str | Path, num: int | None = None) -> dict[str, Any]:
        """Sample `num` videos and write them (`video_io.write_run_outputs`); returns the
        report, with the videos by stage under "outputs"."""
        num = num or self.config.num_samples
        outputs, seconds = self.sample_many(num)
        report = video_io.write_run_outputs(out_dir, outputs, seconds, self.config.fps)
        report["outputs"] = outputs
        final_shape = list(outputs.values())[-1].shape[1:]
        print(
            f"{self.config.stage}: wrote {num} videos of shape {final_shape} to "
            f"{Path(out_dir) / 'final.gif'}; seconds per stage (first batch compiles): "
            + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
        )
        return report


def validate_chain(stages: list[tuple[str, Any]]) -> None:
    """Refuse stages whose shapes do not chain, naming both shapes (before any sampling)."""
    first_name, first = stages[0]
    if first.input_shape is not None:
        raise ConfigError(
            f"cascade: the first stage {first_name!r} ({first.name}) is conditioned on a video of "
            f"shape {first.input_shape}; the first stage must generate from noise (a keyframe stage)."
        )
    for (prev_name, prev), (name, stage) in zip(stages, stages[1:], strict=False):
        if stage.input_shape is None:
            raise ConfigError(f"cascade: stage {name!r} ({stage.name}) takes no video input.")
        if tuple(prev.output_shape) != tuple(stage.input_shape):
            raise ConfigError(
                f"cascade: stage {prev_name!r} produces (frames, height, width, channels) = "
                f"{tuple(prev.output_shape)} but stage {name!r} expects {tuple(stage.input_shape)}. "
                "Retrain one of them with matching config.view / config.sr settings."
            )


def with_cascade_sampling(
    config: ml_collections.ConfigDict, name: str, stage_config: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
    """`stage_config` (changed in place) with the sampling settings a cascade config gives
    stage `name` (`config.stages[name]`: sampler, steps, eta, guidance_scale, aug_t)."""
    s = config.stages[name]
    check_choice(s.sampler, ("ddpm", "ddim"), f"stages.{name}.sampler")
    stage_config.sample.update(sampler=s.sampler, steps=s.steps, eta=s.eta)
    workdir = s.workdir
    if "guidance_scale" in s:  # only where it does something: refuse it otherwise
        if s.guidance_scale and stage_config.model.num_classes <= 0:
            raise ConfigError(
                f"config.stages.{name}.guidance_scale={s.guidance_scale}: the stage in "
                f"{workdir} is unconditional (model.num_classes=0); set it to 0."
            )
        stage_config.sample.guidance_scale = s.guidance_scale
    if "aug_t" in s:
        if "sr" not in stage_config:
            raise ConfigError(
                f"config.stages.{name}.aug_t: the {stage_config.stage} stage in {workdir} "
                "has no noise conditioning augmentation; remove the key."
            )
        stage_config.sr.sample_aug_t = s.aug_t
    return stage_config


def with_single_stage_sampling(
    config: ml_collections.ConfigDict, dit_config: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
    """`dit_config` (changed in place) with a single_stage config's sampling settings
    (`config.dit`: sampler, steps, shift, guidance_scale)."""
    s = config.dit
    check_choice(s.sampler, FLOW_SAMPLERS, "dit.sampler")
    if s.guidance_scale and dit_config.model.num_classes <= 0:
        raise ConfigError(
            f"config.dit.guidance_scale={s.guidance_scale}: the latent DiT in {s.workdir} is "
            "unconditional (model.num_classes=0); set it to 0."
        )
    dit_config.sample.update(
        sampler=s.sampler, steps=s.steps, shift=s.shift, guidance_scale=s.guidance_scale
    )
    return dit_config


class CascadeRunner(Runner):
    """Trained stages in `config.order`, each conditioned on the previous one's output."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.mesh = parallel.make_mesh(config.mesh)
        stage_configs = []
        for name in config.order:
            if name not in config.stages:
                raise ConfigError(
                    f"config.order names {name!r}, which is not in config.stages "
                    f"({', '.join(config.stages.keys())})."
                )
            stage_configs.append(
                (
                    name,
                    with_cascade_sampling(
                        config, name, config_from_checkpoint(config.stages[name].workdir)
                    ),
                )
            )
        validate_chain([(name, build_stage(c)) for name, c in stage_configs])
        self.stages: list[tuple[str, TrainedStage]] = [
            (name, load_trained(s.workdir, c, mesh=self.mesh, step=s.checkpoint_step or None))
            for name, c in stage_configs
            for s in [config.stages[name]]
        ]

    @property
    def keyframes(self) -> TrainedStage:
        """The first stage (generates from noise)."""
        return self.stages[0][1]

    @property
    def final_config(self) -> ml_collections.ConfigDict:
        """Config of the last stage: what the final videos look like (frames, resolution)."""
        return self.stages[-1][1].config

    def params(self) -> dict[str, int]:
        counts = {name: count_params(trained.params) for name, trained in self.stages}
        return {**counts, "total": sum(counts.values())}

    def sample(
        self, labels: np.ndarray, key: jax.Array
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Run the chain for a batch of labels; returns every stage's output and its wall time."""
        outputs: dict[str, np.ndarray] = {}
        seconds: dict[str, float] = {}
        prev = None
        for i, (name, trained) in enumerate(self.stages):
            cond = {"label": labels} if prev is None else {"label": labels, "cond": prev}
            start = time.perf_counter()
            prev = trained.sample(cond, jax.random.fold_in(key, i))
            seconds[name] = time.perf_counter() - start
            outputs[name] = prev
        return outputs, seconds

    def extend(self, first_frames, target_frames, *, overlap, key, method, w_r=0.0, labels=None):
        """Extension at the keyframes stage, then each super-resolution stage window by window
        over the long clip (`sample_windows`); see `Runner.extend`."""
        outputs: dict[str, np.ndarray] = {}
        seconds: dict[str, float] = {}
        name, keyframes = self.stages[0]
        start = time.perf_counter()
        prev = conditional.extend(
            keyframes,
            first_frames,
            target_frames,
            overlap=overlap,
            key=jax.random.fold_in(key, 0),
            method=method,
            w_r=w_r,
            labels=labels,
        )
        seconds[name], outputs[name] = time.perf_counter() - start, prev
        if labels is None:
            labels = np.full((len(prev),), keyframes.stage.null_label, np.int32)
        for i, (name, trained) in enumerate(self.stages[1:], start=1):
            start = time.perf_counter()
            prev = sample_windows(trained, prev, labels, jax.random.fold_in(key, i))
            seconds[name], outputs[name] = time.perf_counter() - start, prev
        return outputs, seconds


def sample_windows(
    trained: TrainedStage, long_cond: np.ndarray, labels: np.ndarray, key: jax.Array
) -> np.ndarray:
    """A super-resolution stage over a clip longer than its window: long_cond [B, L, h, w, c]
    cut into L / t consecutive windows of the stage's input frames t, each sampled at the
    trained shape (window j with fold_in(key, j)) and concatenated: [B, L * T / t, H, W, C].
    Windows are independent given their input, so a boundary may show a seam."""
    window = trained.stage.input_shape[0]
    length = long_cond.shape[1]
    if length % window:
        raise ConfigError(
            f"a clip of {length} frames does not cut into windows of the {trained.stage.name} "
            f"stage's {window} input frames: choose a target length that is a multiple of {window}."
        )
    pieces = [
        trained.sample(
            {"label": labels, "cond": long_cond[:, j * window : (j + 1) * window]},
            jax.random.fold_in(key, j),
        )
        for j in range(length // window)
    ]
    return np.concatenate(pieces, axis=1)


def latents_as_video(latents: np.ndarray) -> np.ndarray:
    """Latents [B,T,h,w,C] as a viewable clip: up to 3 channels, squashed into [-1, 1]."""
    shown = latents[..., : min(3, latents.shape[-1])]
    return np.tanh(shown / 2.0)


class SingleStageRunner(Runner):
    """A trained latent_dit workdir (whose config names its VAE), sampled and decoded."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.mesh = parallel.make_mesh(config.mesh)
        dit_config = with_single_stage_sampling(config, config_from_checkpoint(config.dit.workdir))
        self.dit = load_trained(
            config.dit.workdir, dit_config, mesh=self.mesh, step=config.dit.checkpoint_step or None
        )

    @property
    def final_config(self) -> ml_collections.ConfigDict:
        return self.dit.config

    def params(self) -> dict[str, int]:
        counts = {
            "latent_dit": count_params(self.dit.params),
            "video_vae": count_params(self.dit.stage.vae.params),
        }
        return {**counts, "total": sum(counts.values())}

    def sample(self, labels: np.ndarray, key: jax.Array):
        start = time.perf_counter()
        latents = self.dit.sample({"label": labels}, key)
        mid = time.perf_counter()
        videos = self.dit.stage.to_video(latents)
        end = time.perf_counter()
        outputs = {"latent_dit": latents_as_video(latents), "video_vae": videos}
        return outputs, {"latent_dit": mid - start, "vae_decode": end - mid}

    def extend(self, first_frames, target_frames, *, overlap, key, method, w_r=0.0, labels=None):
        """Pixel first frames [B, 1 + 4k, H, W, C] encoded, extended by replacement of given latent
        frames to `target_frames` latent frames, decoded chunk by chunk (`conditional.extend_video`);
        see `Runner.extend`."""
        start = time.perf_counter()
        videos, latents = conditional.extend_video(
            self.dit,
            first_frames,
            target_frames,
            overlap=overlap,
            key=key,
            method=method,
            w_r=w_r,
            labels=labels,
        )
        outputs = {"latent_dit": latents_as_video(latents), "video_vae": videos}
        return outputs, {"latent_dit+vae": time.perf_counter() - start}


def build_runner(config: ml_collections.ConfigDict) -> Runner:
    """The runner a `cascade` or `single_stage` config names."""
    check_choice(config.stage, ("cascade", "single_stage"), "stage")
    return CascadeRunner(config) if config.stage == "cascade" else SingleStageRunner(config)


def sample_to_files(
    trained: TrainedStage, workdir: str | Path, num: int, *, seed: int | None = None
) -> Path:
    """`--mode=sample` for one stage: EMA weights, test-split conditioning, files in workdir/samples."""
    cond = trained.sampler.test_conditioning(trained.config, num)
    key = jax.random.key(trained.config.seed if seed is None else seed)
    start = time.perf_counter()
    videos = trained.stage.to_video(trained.sample(cond, key))
    seconds = time.perf_counter() - start
    path = video_io.write_videos(videos, Path(workdir) / "samples", f"{trained.stage.name}_final")
    print(
        f"Wrote {len(videos)} samples of shape {videos.shape[1:]} to {path} ({seconds:.1f} s "
        "including compilation)"
    )
    return path


def write_av_samples(
    trained: TrainedStage,
    workdir: str | Path,
    num: int,
    *,
    seed: int | None = None,
    outputs: np.ndarray | None = None,
) -> Path:
    """`--mode=sample` for the joint audio-video stage (`cascade.stages.av_dit`): the video grid
    as for any stage, plus one MP4 per sample carrying its generated sound
    (samples/av_dit_final_<i>.mp4). `outputs`: packed outputs [num, *stage.output_shape]
    already sampled (`--mode=evaluate`), else sampled here. Returns the samples directory."""
    stage = trained.stage
    if outputs is None:
        cond = trained.sampler.test_conditioning(trained.config, num)
        key = jax.random.key(trained.config.seed if seed is None else seed)
        outputs = trained.sample(cond, key)
    videos, audio = stage.to_video(outputs), stage.to_audio(outputs)
    out = Path(workdir) / "samples"
    video_io.write_videos(videos, out, f"{stage.name}_final", fps=stage.fps)
    if jax.process_index() == 0:
        scale = max(1, 64 // videos.shape[2])
        for i, (video, track) in enumerate(zip(videos, audio, strict=True)):
            path = out / f"{stage.name}_final_{i}.mp4"
            video_io.write_mp4(
                path, video, fps=stage.fps, scale=scale, audio=track, sample_rate=stage.sample_rate
            )
    print(f"Wrote {len(videos)} clips with sound ({audio.shape[1]} samples each) to {out}")
    return out
