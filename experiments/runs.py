"""Finished measurements kept on disk, so an experiment resumes and never redoes them.

A run (one setting of one ablation at one seed, or one pipeline at one seed) writes its
per-clip arrays to `<root>/<key>/arrays.npz` and its scalars to `info.json`, then the marker
`done.json` last: a run killed before the marker is redone (its trained stages resume from
their checkpoints), one with the marker is read back. Trained stages have their own marker
(`common.train_stage`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from experiments import tables

MARKER = "done.json"

Arrays = dict[str, np.ndarray]


class RunStore:
    """Runs under `root`, each keyed by a relative path like 'cfg/w=2/seed1'."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.reused: list[str] = []  # keys read back this session (finished before)
        self.computed: list[str] = []  # keys measured this session

    def done(self, key: str) -> bool:
        return (self.root / key / MARKER).is_file()

    def load(self, key: str) -> tuple[Arrays, dict[str, Any]]:
        folder = self.root / key
        with np.load(folder / "arrays.npz") as data:
            arrays = {k: data[k] for k in data.files}
        return arrays, json.loads((folder / "info.json").read_text())

    def save(self, key: str, arrays: Arrays, info: dict[str, Any]) -> None:
        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "arrays.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        tables.write_json(folder / "info.json", info)
        # The marker last, written whole (rename), so a half-written run never counts as done.
        tmp = folder / f".{MARKER}.tmp"
        tmp.write_text(json.dumps({"arrays": sorted(arrays), "info": "info.json"}))
        os.replace(tmp, folder / MARKER)

    def get(
        self, key: str, compute: Callable[[], tuple[Arrays, dict[str, Any]]]
    ) -> tuple[Arrays, dict[str, Any]]:
        """The finished run `key`, or `compute()` now (then saved with its marker)."""
        if self.done(key):
            self.reused.append(key)
            return self.load(key)
        arrays, info = compute()
        self.save(key, arrays, info)
        self.computed.append(key)
        return arrays, info
