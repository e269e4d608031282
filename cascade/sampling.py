"""Sampling a trained stage: one jitted sampler per (stage, steps), and the files it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from cascade import parallel, video_io
from cascade.data import pipeline
from cascade.stages.common import Batch, Stage
from cascade.train_state import merge_model


class Sampler:
    """`sample(params, cond, key)` for a stage, compiled once per step count."""

    def __init__(self, stage: Stage, graphdef: Any, mesh: Mesh):
        self.stage = stage
        self.graphdef = graphdef
        self.mesh = mesh
        self._compiled: dict[int | None, Any] = {}

    def _fn(self, steps: int | None):
        if steps not in self._compiled:

            def run(params, cond, key):
                return self.stage.sample(merge_model(self.graphdef, params), key, cond, steps=steps)

            self._compiled[steps] = jax.jit(run)
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

    @staticmethod
    def write(videos: np.ndarray, out_dir: str | Path, name: str, fps: int = 8) -> Path:
        """name.gif and name.mp4 (videos tiled), name_grid.png (rows = videos, cols = frames).

        Small frames are upscaled (nearest) to at least 64 pixels so a person can see them.
        With several processes (all holding the same videos) only process 0 writes.
        """
        out_dir = Path(out_dir)
        if jax.process_index() != 0:
            return out_dir / f"{name}.gif"
        out_dir.mkdir(parents=True, exist_ok=True)
        scale = max(1, 64 // max(videos.shape[2], 1))
        video_io.write_video_grid_gif(out_dir / f"{name}.gif", videos, fps=fps, scale=scale)
        video_io.write_video_grid_mp4(out_dir / f"{name}.mp4", videos, fps=fps, scale=scale)
        video_io.write_grid_png(out_dir / f"{name}_grid.png", videos, scale=scale)
        return out_dir / f"{name}.gif"


def sample_to_files(
    trained: Any, workdir: str | Path, num: int, *, seed: int | None = None
) -> Path:
    """`--mode=sample` for one stage: EMA weights, test-split conditioning, files in workdir/samples."""
    import time

    cond = trained.sampler.test_conditioning(trained.config, num)
    key = jax.random.key(trained.config.seed if seed is None else seed)
    start = time.perf_counter()
    videos = trained.stage.to_video(trained.sample(cond, key))
    seconds = time.perf_counter() - start
    path = Sampler.write(videos, Path(workdir) / "samples", f"{trained.stage.name}_final")
    print(
        f"Wrote {len(videos)} samples of shape {videos.shape[1:]} to {path} ({seconds:.1f} s "
        "including compilation)"
    )
    return path
