"""Runners chain trained stages into videos: the cascade (base -> TSR -> SSR) and the
single-stage path (latent DiT -> VAE decode). Both write the same outputs: the final videos,
every intermediate, a side-by-side strip of all stages, and per-stage wall time.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
import numpy as np

from cascade import parallel
from cascade.configs import ConfigError, check_choice
from cascade.evaluation.cost import count_params
from cascade.runner_common import Runner
from cascade.stages import build_stage
from cascade.trained import TrainedStage, config_from_checkpoint, load_trained


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

    @property
    def base(self) -> TrainedStage:
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


def build_runner(config: ml_collections.ConfigDict):
    if config.stage == "cascade":
        return CascadeRunner(config)
    from cascade.single_stage import SingleStageRunner

    return SingleStageRunner(config)
