"""Runners chain trained stages into videos: the cascade (base -> TSR -> SSR) and the
single-stage path (latent DiT -> VAE decode). Both write the same outputs: the final videos,
every intermediate, a side-by-side strip of all stages, and per-stage wall time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from cascade import parallel
from cascade.configs import ConfigError, check_choice
from cascade.data import pipeline
from cascade.sampling import Sampler
from cascade.stages import build_stage
from cascade.trained import TrainedStage, config_from_checkpoint, load_trained


def nearest_resize(videos: np.ndarray, frames: int, size: int) -> np.ndarray:
    """[N,T,H,W,C] -> [N,frames,size,size,C] by repetition (for showing stages side by side)."""
    n, t, h, w, c = videos.shape
    ti = (np.arange(frames) * t) // frames
    yi = (np.arange(size) * h) // size
    xi = (np.arange(size) * w) // size
    return videos[:, ti][:, :, yi][:, :, :, xi]


def side_by_side(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Every stage's output on the final grid, concatenated along width: [N,T,H,W*stages,C]."""
    final = list(outputs.values())[-1]
    _, t, h, _, c = final.shape
    panels = []
    for video in outputs.values():
        if video.shape[-1] != c:
            video = np.repeat(video[..., :1], c, axis=-1)
        panels.append(nearest_resize(video, t, h))
    return np.concatenate(panels, axis=3)


def write_run_outputs(
    out_dir: str | Path, outputs: dict[str, np.ndarray], seconds: dict[str, float], fps: int
) -> dict[str, Any]:
    """final.{gif,mp4,_grid.png}, <stage>.{...} for every intermediate, stages.gif, timing.json."""
    out_dir = Path(out_dir)
    names = list(outputs)
    for name in names:
        Sampler.write(outputs[name], out_dir, name, fps=fps)
    Sampler.write(outputs[names[-1]], out_dir, "final", fps=fps)
    Sampler.write(side_by_side(outputs), out_dir, "stages", fps=fps)
    n = len(outputs[names[-1]])
    report = {
        "stages": names,
        "shapes": {k: list(v.shape[1:]) for k, v in outputs.items()},
        "seconds": seconds,
        "seconds_per_video": {k: v / n for k, v in seconds.items()},
        "num_videos": n,
    }
    (out_dir / "timing.json").write_text(json.dumps(report, indent=2))
    return report


def validate_chain(stages: list[tuple[str, Any]]) -> None:
    """Refuse stages whose shapes do not chain, naming both shapes (before any sampling)."""
    first_name, first = stages[0]
    if first.input_shape is not None:
        raise ConfigError(
            f"cascade: the first stage {first_name!r} ({first.name}) is conditioned on a video of "
            f"shape {first.input_shape}; the first stage must generate from noise (a base stage)."
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


class CascadeRunner:
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
                    self._with_sampling(name, config_from_checkpoint(config.stages[name].workdir)),
                )
            )
        validate_chain([(name, build_stage(c)) for name, c in stage_configs])
        self.stages: list[tuple[str, TrainedStage]] = [
            (name, load_trained(config.stages[name].workdir, c, mesh=self.mesh))
            for name, c in stage_configs
        ]

    def _with_sampling(self, name: str, stage_config: ml_collections.ConfigDict):
        s = self.config.stages[name]
        check_choice(s.sampler, ("ddpm", "ddim"), f"stages.{name}.sampler")
        stage_config.sample.update(
            sampler=s.sampler, steps=s.steps, eta=s.eta, guidance_scale=s.guidance_scale
        )
        if "sr" in stage_config:
            stage_config.sr.sample_aug_t = s.aug_t
        return stage_config

    @property
    def base(self) -> TrainedStage:
        return self.stages[0][1]

    def labels(self, num: int) -> np.ndarray:
        """Class labels of `num` test clips (so samples can be compared with real ones)."""
        data = self.base.config.data
        clips = next(
            pipeline.batch_iterator(data, split="test", batch_size=num, seed=0, start_step=0)
        )
        return np.asarray(clips["label"], np.int32)

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

    def sample_many(self, num: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
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
        num = num or self.config.num_samples
        outputs, seconds = self.sample_many(num)
        report = write_run_outputs(out_dir, outputs, seconds, self.config.fps)
        print(
            f"Cascade wrote {num} videos of shape {report['shapes'][self.config.order[-1]]} to "
            f"{Path(out_dir) / 'final.gif'}; seconds per stage: "
            + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
        )
        return report


def build_runner(config: ml_collections.ConfigDict):
    if config.stage == "cascade":
        return CascadeRunner(config)
    from cascade.single_stage import SingleStageRunner

    return SingleStageRunner(config)
