"""Training and evaluation logs: TensorBoard event files plus a plain `metrics.jsonl` beside them.

`tensorboard --logdir DIR` shows, for every workdir under DIR:
  Scalars  the training metrics (`loss`, `grad_norm`, ..., `learning_rate`, `steps_per_s`)
           and the evaluation metrics as `eval/<key>/<key>` (nested dicts flattened)
  Images   `samples`: videos as one grid (rows = videos, columns = frames), and
           `samples_video`: the same videos as one animated GIF (TensorBoard plays it)
  Text     `config`: the config the run trained with
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cascade import json_io, video_io

EVAL_PREFIX = "eval"


class MetricsLog:
    """Writes scalars/text/video grids/animated videos to `workdir/logs` (TensorBoard) and
    scalars to `workdir/metrics.jsonl`."""

    def __init__(self, workdir: str | Path, *, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        from tensorboardX import SummaryWriter  # imported lazily: only the logging host needs it

        self._tb = SummaryWriter(str(workdir / "logs"))
        self._jsonl = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)
        self._jsonl.write(json_io.dumps({"step": step, **values}, indent=None) + "\n")
        self._jsonl.flush()

    def evaluation(self, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
        """Every finite number in a (nested) metrics dict, as scalars `eval/<a>/<b>`; returns
        what was logged. Strings, lists and non-finite values (e.g. FVD left undefined) are
        skipped: TensorBoard plots numbers only."""
        values = flatten_numbers(metrics, EVAL_PREFIX)
        self.scalars(values, step)
        return values

    def text(self, name: str, text: str, step: int) -> None:
        if self.enabled:
            self._tb.add_text(name, f"```\n{text}\n```", step)

    def video_grid(self, name: str, videos: Any, step: int) -> None:
        """Videos [N,T,H,W,C] in [-1,1] as one image: rows = videos, columns = frames."""
        if not self.enabled:
            return
        v = np.clip((np.asarray(videos, np.float32) + 1.0) * 127.5, 0, 255).astype(np.uint8)
        n, t, h, w, c = v.shape
        grid = v.transpose(0, 2, 1, 3, 4).reshape(n * h, t * w, c)
        if c == 1:
            grid = np.repeat(grid, 3, axis=-1)
        self._tb.add_image(name, grid, step, dataformats="HWC")

    def video(self, name: str, videos: Any, step: int, *, fps: float = 4.0, scale: int = 4) -> None:
        """Videos [N,T,H,W,C] in [-1,1] as one animated GIF (videos side by side), shown in
        TensorBoard's image dashboard. (tensorboardX's add_video needs moviepy; a GIF-encoded
        image summary is the same thing TensorBoard receives from it.)"""
        if not self.enabled:
            return
        from tensorboardX.proto.summary_pb2 import Summary

        frames = video_io.tile_videos(videos, ncols=len(videos))  # uint8 [T, H', W', C]
        data, height, width = gif_bytes(frames, fps=fps, scale=scale)
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
        summary = Summary(value=[Summary.Value(tag=name, image=image)])
        self._tb.file_writer.add_summary(summary, step)

    def close(self) -> None:
        if self.enabled and self._tb is not None:
            self._tb.close()
            self._jsonl.close()
            self._tb = None


def flatten_numbers(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """{"a": {"b": 1.0, "c": "x"}} -> {"<prefix>/a/b": 1.0}: finite int/float/bool leaves and
    0-d arrays only."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_numbers(value, name))
        elif isinstance(value, (int, float, bool, np.number, np.bool_)) or (
            isinstance(value, np.ndarray) and value.ndim == 0
        ):
            number = float(value)
            if math.isfinite(number):
                out[name] = number
    return out


def gif_bytes(frames: np.ndarray, *, fps: float, scale: int = 1) -> tuple[bytes, int, int]:
    """uint8 frames [T,H,W,C] (C = 1 or 3) as an endlessly looping GIF; returns (bytes, height,
    width) of the encoded (nearest-neighbour upscaled by `scale`) frames."""
    frames = np.asarray(frames, np.uint8)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=int(round(1000 / fps)),
        loop=0,
    )
    return buffer.getvalue(), frames.shape[1], frames.shape[2]


def log_evaluation(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    step: int = 0,
    videos: Mapping[str, Any] | None = None,
) -> None:
    """Evaluation metrics into `out_dir/logs` (beside the metrics.json written there), so
    `tensorboard --logdir` over a results folder shows them next to the training curves;
    `videos` ({name: [N,T,H,W,C] in [-1,1]}, e.g. a cascade's output per stage) as the images
    `samples/<name>` and `samples_video/<name>`."""
    log = MetricsLog(out_dir)
    try:  # a run's `config` entry holds settings, not measurements
        log.evaluation({k: v for k, v in metrics.items() if k != "config"}, step)
        for name, v in (videos or {}).items():
            log.video_grid(f"samples/{name}", v, step)
            log.video(f"samples_video/{name}", v, step)
    finally:
        log.close()
