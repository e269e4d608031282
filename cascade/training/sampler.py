"""Sampling a stage's network on the mesh: one jitted sampling loop per (stage, step count).

The trainer's previews and every trained stage (`cascade.training.trained`) sample through it."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from cascade.data import pipeline
from cascade.stages.stage import Batch, Stage, sampling_fn
from cascade.training import parallel


class Sampler:
    """`sample(params, cond, key)` for a stage, compiled once per step count."""

    def __init__(self, stage: Stage, graphdef: Any, mesh: Mesh):
        self.stage = stage
        self.graphdef = graphdef
        self.mesh = mesh
        self._compiled: dict[int | None, Any] = {}

    def _fn(self, steps: int | None):
        if steps not in self._compiled:
            self._compiled[steps] = jax.jit(sampling_fn(self.stage, self.graphdef, steps))
        return self._compiled[steps]

    def _place(self, cond: Batch) -> Batch:
        """Conditioning (the same full batch on every process) as global arrays on the mesh."""
        n = len(cond["label"])
        sharding = (
            parallel.batch_sharding(self.mesh)
            if n % parallel.data_parallel_size(self.mesh) == 0
            else parallel.replicated(self.mesh)
        )
        return parallel.global_array(cond, sharding)

    def sample(
        self, params: Any, cond: Batch, key: jax.Array, steps: int | None = None
    ) -> np.ndarray:
        """Outputs [N, *stage.output_shape] float32 in [-1, 1] (numpy, on the host).

        With several processes every one of them must call this with the same `cond` and
        `key`; each gets all N outputs (gathered across processes).
        """
        with self.mesh:
            out = self._fn(steps)(params, self._place(cond), key)
        return np.asarray(parallel.to_host(out), np.float32)

    def test_conditioning(self, config: ml_collections.ConfigDict, num: int) -> Batch:
        """Conditioning for `num` samples from the first `num` test clips in stored order
        (`pipeline.test_clips`: sample i is conditioned on real test clip i)."""
        clips = pipeline.test_clips(config.data, num)
        batch = self.stage.eval_batch(clips, np.random.default_rng([config.seed, 1]))
        return self.stage.cond_from_batch(batch)
