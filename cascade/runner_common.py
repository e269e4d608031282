"""What both runners share: writing every stage's videos, a side-by-side strip, and timings;
batched sampling over test-split labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from cascade.data import pipeline
from cascade.sampling import Sampler


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
    if jax.process_index() == 0:  # every host holds the same outputs; one writes them
        (out_dir / "timing.json").write_text(json.dumps(report, indent=2))
    return report


class Runner:
    """What both runners share: test-split labels, batched sampling, writing the files.

    Subclasses define `sample(labels, key) -> (outputs by stage, seconds by stage)`,
    `final_config` (the config whose view the final videos have) and `params()`.
    """

    config: ml_collections.ConfigDict

    def labels(self, num: int) -> np.ndarray:
        """Labels of the first `num` test clips in stored order (`pipeline.test_clips`): video i
        is conditioned on the label of real clip i, the one evaluation compares it with."""
        return np.asarray(pipeline.test_clips(self.final_config.data, num)["label"], np.int32)

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
        """Sample `num` videos and write them (see `write_run_outputs`); returns the report."""
        num = num or self.config.num_samples
        outputs, seconds = self.sample_many(num)
        report = write_run_outputs(out_dir, outputs, seconds, self.config.fps)
        report["outputs"] = outputs
        final_shape = list(outputs.values())[-1].shape[1:]
        print(
            f"{self.config.stage}: wrote {num} videos of shape {final_shape} to "
            f"{Path(out_dir) / 'final.gif'}; seconds per stage (first batch compiles): "
            + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
        )
        return report
