"""Loading a trained stage from its workdir: config from the checkpoint, EMA weights onto a mesh.

The cascade runner, the latent DiT (which needs its VAE), distillation (which
needs its teacher) and `--mode=sample|evaluate` all start here, so a workdir
is all one needs to name a trained stage.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from cascade.stages import build_stage
from cascade.stages.stage import Batch, Stage, apply_measured, merge_model, model_graphdef
from cascade.training import parallel
from cascade.training.checkpoints import CheckpointError, require_checkpoint
from cascade.training.frozen_vae import FrozenVAE
from cascade.training.sampler import Sampler
from cascade.training.train_state import init_state, make_optimizer


@dataclasses.dataclass
class TrainedStage:
    """A stage with restored weights (EMA by default), ready to sample."""

    config: ml_collections.ConfigDict
    stage: Stage
    graphdef: Any
    params: Any
    step: int
    workdir: Path
    sampler: Sampler

    def model(self):
        return merge_model(self.graphdef, self.params)

    def sample(self, cond: Batch, key: jax.Array, steps: int | None = None) -> np.ndarray:
        return self.sampler.sample(self.params, cond, key, steps=steps)


def build_stage_from_config(config: ml_collections.ConfigDict) -> Stage:
    """`cascade.stages.build_stage` with what a stage needs from other trained stages loaded:
    the latent DiT's frozen VAE (`config.vae.workdir`)."""
    vae = FrozenVAE.load(config) if config.stage == "latent_dit" else None
    return build_stage(config, vae=vae)


def config_from_checkpoint(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a stage was trained with, as stored in its newest checkpoint."""
    meta = require_checkpoint(workdir).restore_meta()
    if not meta or "config" not in meta:
        raise CheckpointError(
            f"The checkpoint in {Path(workdir)} has no stored config (metadata missing or "
            "unreadable). Retrain the stage or pass its config explicitly."
        )
    # With what it measured at training time (the latent DiT's latent scale) filled in.
    return apply_measured(ml_collections.ConfigDict(meta["config"]), meta.get("measured"))


def load_trained(
    workdir: str | Path,
    config: ml_collections.ConfigDict | None = None,
    *,
    mesh: Mesh | None = None,
    ema: bool = True,
    step: int | None = None,
) -> TrainedStage:
    """Restore the newest readable checkpoint of `workdir` (falls back past corrupt ones), or
    the one of `step` (kept along training: config.train.keep_steps)."""
    workdir = Path(workdir).expanduser()
    ckpt = require_checkpoint(workdir)
    if config is None:
        config = config_from_checkpoint(workdir)
    else:  # a given config still takes what training measured (it never reads the train set)
        config = apply_measured(config, (ckpt.restore_meta() or {}).get("measured"))
    stage = build_stage_from_config(config)
    mesh = mesh or parallel.make_mesh(config.mesh)
    tx = make_optimizer(config.train)
    abstract = jax.eval_shape(lambda k: init_state(stage, tx, k), jax.random.key(0))
    specs = parallel.param_specs(
        abstract, mesh, [tuple(r) for r in config.mesh.rules], config.mesh.fsdp_min_size
    )
    shardings = parallel.shardings_for(specs, mesh)
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    # Raises (nothing moved) when `config` builds another model than the one stored, and when
    # every checkpoint is unreadable (those are moved aside as corrupt-*, never deleted).
    only = ("step", "ema_params" if ema else "params")
    restored = ckpt.restore_latest(target, only=only, at_step=step)
    if restored is None:
        raise CheckpointError(f"No checkpoint left in {ckpt.directory}. Train the stage first.")
    step, state, _ = restored
    graphdef = model_graphdef(stage)
    params = state["ema_params" if ema else "params"]
    return TrainedStage(
        config, stage, graphdef, params, step, workdir, Sampler(stage, graphdef, mesh)
    )
