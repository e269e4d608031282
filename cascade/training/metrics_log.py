"""Training logs: TensorBoard event files plus a plain `metrics.jsonl` beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


class MetricsLog:
    """Writes scalars/text/video grids to `workdir/logs` (TensorBoard) and `workdir/metrics.jsonl`."""

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
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()

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

    def close(self) -> None:
        if self.enabled and self._tb is not None:
            self._tb.close()
            self._jsonl.close()
            self._tb = None
