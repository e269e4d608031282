"""Orbax checkpointing of the train state: keep N, async, resume, fall back on corruption.

Layout: `workdir/checkpoints/<step>/{state,meta}`. `meta` is JSON (the config
and the stage name) so a later reader can tell what it holds without the code
that wrote it. A checkpoint that fails to restore is moved aside to
`workdir/checkpoints/corrupt-<step>` (never deleted) and the previous one is used.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was required."""


def _manager(directory: Path, *, keep: int, async_save: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save
    )
    return ocp.CheckpointManager(directory, options=options)


class Checkpointer:
    """Saves and restores `{"state": pytree, "meta": json}` under `workdir/checkpoints`."""

    def __init__(self, workdir: str | Path, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(workdir).expanduser().resolve() / "checkpoints"
        self._keep = keep
        self._async = async_save
        self._mngr = _manager(self.directory, keep=keep, async_save=async_save)

    def steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> None:
        self._mngr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=force,
        )

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """Restore the newest readable checkpoint onto `abstract_state`'s shardings.

        `abstract_state` is a tree of `jax.ShapeDtypeStruct(shape, dtype, sharding=...)`,
        so a checkpoint written on one mesh restores onto another. Returns
        (step, state, meta), or None when the directory holds no checkpoint.
        """
        self.wait()
        for step in reversed(self.steps()):
            try:
                restored = self._mngr.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
                jax.block_until_ready(restored["state"])
                return step, restored["state"], dict(restored["meta"] or {})
            except Exception as err:  # noqa: BLE001 - any failure means "unreadable"
                self._quarantine(step, err)
        return None

    def restore_meta(self) -> dict[str, Any] | None:
        """The JSON metadata of the newest checkpoint, without touching arrays."""
        for step in reversed(self.steps()):
            path = self.directory / str(step) / "meta" / "metadata"
            if path.exists():
                return json.loads(path.read_text())
        return None

    def _quarantine(self, step: int, err: Exception) -> None:
        target = self.directory / f"corrupt-{step}"
        message = (
            f"Checkpoint at step {step} in {self.directory} could not be restored "
            f"({type(err).__name__}: {str(err)[:300]}). Moved it to {target} and falling "
            "back to the previous checkpoint."
        )
        log.warning(message)
        print(f"WARNING: {message}", flush=True)
        shutil.move(str(self.directory / str(step)), str(target))
        # The manager caches its step list: rebuild it so the moved step is gone.
        self._mngr.close()
        self._mngr = _manager(self.directory, keep=self._keep, async_save=self._async)


def require_checkpoint(workdir: str | Path) -> Checkpointer:
    """A Checkpointer for a workdir that must already hold a trained stage."""
    ckpt = Checkpointer(workdir, async_save=False)
    if not ckpt.steps():
        raise CheckpointError(
            f"No checkpoint found in {ckpt.directory}. Train this stage first "
            f"(python -m cascade.main --mode=train --workdir={Path(workdir)} --config=...) "
            "or point the config at the workdir that holds it."
        )
    return ckpt
