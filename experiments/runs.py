"""Finished measurements kept on disk, so an experiment resumes and never redoes them.

A run (one setting of one ablation at one seed, or one pipeline at one seed) writes its
per-clip arrays to `<root>/<key>/arrays.npz` and its scalars to `info.json`, then the marker
`done.json` last: a run killed before the marker is redone (its trained stages resume from
their checkpoints), one with the marker is read back. Trained stages have their own marker
(`common.train_stage`).

Runs are committed with their results and reused by later sessions on other machines, so the
marker also holds the experiment's fingerprint (`fingerprint`): a run made under another
config or other stage presets is stale and is measured again, never read back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cascade import json_io

MARKER = "done.json"
# Experiment fields (dotted) that change no measurement: which runs to make (seeds, ablations,
# the settings each ablation sweeps: every setting is its own run), where files live, and the
# bootstrap of the summary (computed afresh from the runs on every call).
NOT_FINGERPRINTED = (
    "seeds",
    "ablations",
    "cfg.scales",
    "joint_training.images",
    "joint_training.image_pools",
    "temporal_mixing.kinds",
    "distillation.student_steps",
    "students",  # the comparison's distilled rows: steps and round length are in their run keys
    "out",
    "workdirs",
    "data_dir",
    "bootstrap",
)

Arrays = dict[str, np.ndarray]


def fingerprint(exp: Mapping[str, Any], stage_hashes: Mapping[str, str]) -> str:
    """12 hex digits over the experiment config `exp` (less NOT_FINGERPRINTED) and the
    workdir hashes `stage_hashes` of its stage presets (so an edited preset is noticed)."""
    values = json.loads(json.dumps(dict(exp), default=str))  # a deep copy
    for dotted in NOT_FINGERPRINTED:
        *sections, key = dotted.split(".")
        node = values
        for part in sections:
            node = node.get(part, {})
        node.pop(key, None)
    blob = json.dumps({"exp": values, "stages": dict(stage_hashes)}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


class RunStore:
    """Runs under `root`, each keyed by a relative path like 'cfg/w=2/seed1'; with a
    `fingerprint`, only runs marked with the same one count as finished."""

    def __init__(self, root: str | Path, fingerprint: str | None = None):
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.reused: list[str] = []  # keys read back this session (finished before)
        self.computed: list[str] = []  # keys measured this session
        self.stale: list[str] = []  # keys marked finished under another fingerprint (redone)

    def done(self, key: str) -> bool:
        marker = self.root / key / MARKER
        if not marker.is_file():
            return False
        if json.loads(marker.read_text()).get("fingerprint") == self.fingerprint:
            return True
        self.stale.append(key)
        return False

    def load(self, key: str) -> tuple[Arrays, dict[str, Any]]:
        folder = self.root / key
        with np.load(folder / "arrays.npz") as data:
            arrays = {k: data[k] for k in data.files}
        return arrays, json.loads((folder / "info.json").read_text())

    def save(self, key: str, arrays: Arrays, info: dict[str, Any]) -> None:
        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "arrays.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        json_io.write_json(folder / "info.json", info)
        # The marker last, written whole (rename), so a half-written run never counts as done.
        tmp = folder / f".{MARKER}.tmp"
        marker = {"arrays": sorted(arrays), "info": "info.json", "fingerprint": self.fingerprint}
        tmp.write_text(json.dumps(marker))
        os.replace(tmp, folder / MARKER)

    def get(
        self, key: str, compute: Callable[[], tuple[Arrays, dict[str, Any]]]
    ) -> tuple[Arrays, dict[str, Any]]:
        """The finished run `key`, or `compute()` now (then saved with its marker)."""
        if self.done(key):
            self.reused.append(key)
            return self.load(key)
        if key in self.stale:
            print(f"{self.root / key}: made under another experiment config; measuring again")
        arrays, info = compute()
        self.save(key, arrays, info)
        self.computed.append(key)
        return arrays, info
