"""Orbax checkpointing of the train state: keep N, async, resume, and never destroy work.

Layout: `workdir/checkpoints/<step>/{state,meta}`. `meta` is JSON (the config
and the stage name) so a later reader can tell what it holds without the code
that wrote it.

What can go wrong, and what happens:
- the stored arrays do not match the requested tree (another config, model
  width or preset): a user error. `CheckpointMismatchError` names the first
  differing arrays; nothing is moved or deleted. The stored tree metadata is
  compared with the target *before* any array is read.
- a checkpoint is unreadable (truncated or missing files, missing tree
  metadata): real corruption. It is moved aside to `corrupt-<step>` (never
  deleted) and the previous one is used. When no usable checkpoint is left but
  quarantined ones exist, restoring refuses to report "no checkpoint", so a
  trainer never silently starts again from step 0.
- a checkpoint's JSON meta is garbage: the previous checkpoint's meta is used.
- the disk is full or read-only while writing (also in the asynchronous
  writer): `CheckpointWriteError` names the directory and the OS reason;
  earlier checkpoints are kept.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from cascade.training.checkpoint_shapes import mismatch_summary, requested_shapes

_OS_REASONS = {  # how tensorstore and friends spell OS errors they do not raise as OSError
    "No space left on device": errno.ENOSPC,
    "Read-only file system": errno.EROFS,
    "Disk quota exceeded": errno.EDQUOT,
    "Permission denied": errno.EACCES,
}


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was required, or checkpoints could not be used/written."""


class CheckpointMismatchError(CheckpointError):
    """The stored arrays differ from the requested tree: another config wrote this workdir."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (disk full, read-only file system, ...)."""


def _warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


class _DropReportedWriteErrors(logging.Filter):
    """Orbax logs a traceback for a failed background write; we report it once, as a message."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        from_orbax = f"{os.sep}orbax{os.sep}" in (record.pathname or "")
        return not (from_orbax and exc is not None and _io_reason(exc) is not None)


_ABSL_LOGGER = logging.getLogger("absl")
# The meta key holding every stored array's shape (orbax's names), written with the arrays: the
# check against a requested tree reads it instead of orbax's tree metadata, which opens every
# array (~1 s per restore of even a tiny model). Checkpoints without it use orbax's metadata.
ARRAY_SHAPES = "array_shapes"
if not any(isinstance(f, _DropReportedWriteErrors) for f in _ABSL_LOGGER.filters):
    _ABSL_LOGGER.addFilter(_DropReportedWriteErrors())


def _io_reason(err: BaseException) -> str | None:
    """'ENOSPC: No space left on device' when `err` (or its cause) is an OS-level I/O error."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno:
            return f"{errno.errorcode.get(err.errno, err.errno)}: {os.strerror(err.errno)}"
        for text, code in _OS_REASONS.items():
            if text in str(err):
                return f"{errno.errorcode[code]}: {text}"
        err = err.__cause__ or err.__context__
    return None


def _manager(
    directory: Path,
    *,
    keep: int,
    async_save: bool,
    create: bool = True,
    keep_steps: Sequence[int] = (),
) -> ocp.CheckpointManager:
    if keep_steps:  # the newest `keep` and every one of `keep_steps`, never deleted
        policy = checkpoint_managers.AnyPreservationPolicy(
            [checkpoint_managers.LatestN(keep), checkpoint_managers.CustomSteps(list(keep_steps))]
        )
        kept = {"preservation_policy": policy}
    else:
        kept = {"max_to_keep": keep}
    options = ocp.CheckpointManagerOptions(
        **kept, create=create, enable_async_checkpointing=async_save
    )
    # Registering the handlers lets `item_metadata` read a step's tree before restoring it.
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


class Checkpointer:
    """Saves and restores `{"state": pytree, "meta": json}` under `workdir/checkpoints`."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        keep: int = 3,
        async_save: bool = True,
        create: bool = True,
        keep_steps: Sequence[int] = (),
    ):
        """`create=False` for readers: looking up a trained stage must not leave folders behind.
        `keep`: the newest checkpoints kept; the checkpoints of `keep_steps` are kept too
        (quality along training, read back with `restore_latest(at_step=...)`)."""
        self.directory = Path(workdir).expanduser().resolve() / "checkpoints"
        self._keep = keep
        self._async = async_save
        self._create = create
        self._mngr = _manager(
            self.directory, keep=keep, async_save=async_save, create=create, keep_steps=keep_steps
        )
        self._pending: int | None = None  # step of an asynchronous write not yet confirmed

    def steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def quarantined(self) -> list[Path]:
        """Checkpoints moved aside as unreadable (`corrupt-*`), oldest name first."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.startswith("corrupt-"))

    # -- writing --------------------------------------------------------------------------------
    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> None:
        """Start writing `step` (in the background when async); earlier write errors surface here."""
        self.wait()
        meta = {**meta, ARRAY_SHAPES: requested_shapes(state)}
        try:
            self._mngr.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                force=force,
            )
        except Exception as err:
            raise self._write_error(step, err) from None
        self._pending = step if self._async else None

    def wait(self) -> None:
        """Block until the background write is on disk; raise CheckpointWriteError if it failed."""
        step, self._pending = self._pending, None
        try:
            self._mngr.wait_until_finished()
        except Exception as err:
            raise self._write_error(step, err) from None

    def close(self) -> None:
        self.wait()
        self._mngr.close()

    def _write_error(self, step: int | None, err: Exception) -> Exception:
        reason = _io_reason(err)
        if reason is None:
            return err  # not an I/O failure: a bug, keep its traceback
        # From disk: after a failed background write orbax's own step list is no longer exact.
        kept = sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit())
        return CheckpointWriteError(
            f"Could not write the checkpoint of step {step} to {self.directory} ({reason}). "
            f"Earlier checkpoints were left untouched (steps {kept or 'none'}). Free disk space "
            "or make the directory writable (or pass another --workdir), then rerun the same "
            "command to resume from the newest checkpoint."
        )

    # -- reading --------------------------------------------------------------------------------
    def restore_latest(
        self, abstract_state: Any, *, only: Sequence[str] | None = None, at_step: int | None = None
    ) -> tuple[int, Any, dict[str, Any]] | None:
        """Restore the newest readable checkpoint (or the one of step `at_step`) onto
        `abstract_state`'s shardings.

        `abstract_state` is a tree of `jax.ShapeDtypeStruct(shape, dtype, sharding=...)`,
        so a checkpoint written on one mesh restores onto another. `only`: the top-level
        keys to read (e.g. the EMA weights a sampler needs, not the optimizer state: a
        quarter of the arrays); the others come back as `ocp.PLACEHOLDER` leaves. The whole
        stored tree is still checked against `abstract_state`. Returns
        (step, state, meta), or None when the directory holds no checkpoint at all.
        Raises CheckpointMismatchError (nothing moved) when the newest readable
        checkpoint holds other arrays than requested, and CheckpointError when every
        checkpoint is unreadable or `at_step` was not kept.
        """
        self.wait()
        requested = requested_shapes(abstract_state)
        candidates = list(reversed(self.steps()))
        if at_step is not None:
            if at_step not in candidates:
                raise CheckpointError(
                    f"No checkpoint of step {at_step} in {self.directory} (kept: "
                    f"{sorted(candidates) or 'none'}). Besides the newest few, only the steps "
                    "of config.train.keep_steps are kept: train with them listed to read "
                    "quality along training."
                )
            candidates = [at_step]
        for step in candidates:
            try:
                stored = self._stored_shapes(step)
            except Exception as err:  # noqa: BLE001 - no tree metadata: the step is unreadable
                self._quarantine(step, err)
                continue
            summary = mismatch_summary(stored, requested)
            if summary:
                raise CheckpointMismatchError(
                    f"The checkpoint of step {step} in {self.directory} was written by another "
                    f"config than the one given: {summary}. Nothing was moved or deleted. Use "
                    f"the config it was trained with (stored in {self._meta_path(step)}; drop "
                    "the overrides or preset that changed the model), or pass another --workdir "
                    "to train this config from scratch."
                )
            try:
                if only is None:
                    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                    state = self._mngr.restore(step, args=args)["state"]
                else:
                    state = self._restore_subset(step, abstract_state, only)
                jax.block_until_ready(state)
            except MemoryError:
                raise
            except Exception as err:  # noqa: BLE001 - tree matches, so the files are damaged
                self._quarantine(step, err)
                continue
            return step, state, self._read_meta(step) or {}
        if self.quarantined():
            raise self.unusable_error()
        return None

    def _restore_subset(self, step: int, abstract_state: dict[str, Any], only: Sequence[str]):
        """The arrays under the top-level keys `only` of one step; the rest left unread
        (placeholders: the manager's standard handler has no partial read)."""

        def skipped(tree: Any, leaf: Any) -> Any:
            return jax.tree.map(lambda _: leaf, tree)

        item = {
            k: v if k in only else skipped(v, ocp.PLACEHOLDER) for k, v in abstract_state.items()
        }
        restore_args = {
            k: ocp.checkpoint_utils.construct_restore_args(v)
            if k in only
            else skipped(v, ocp.RestoreArgs())
            for k, v in abstract_state.items()
        }
        with ocp.PyTreeCheckpointer() as reader:
            return reader.restore(
                self.directory / str(step) / "state",
                args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args),
            )

    def unusable_error(self) -> CheckpointError:
        """The refusal for a directory whose checkpoints were all moved aside as corrupt."""
        names = ", ".join(p.name for p in self.quarantined())
        return CheckpointError(
            f"{self.directory} holds no usable checkpoint, only unreadable ones moved aside as "
            f"{names}. Refusing to start again from step 0 next to them. To start over, pass "
            "another --workdir (or move those folders out of the way once you no longer need "
            "them); to keep the work, copy a good checkpoint back in as <step>/."
        )

    def _stored_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
        try:  # quietly: a step whose meta does not read falls back to orbax's tree metadata
            shapes = json.loads(self._meta_path(step).read_text())[ARRAY_SHAPES]
            return {name: tuple(shape) for name, shape in shapes.items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass
        metadata = self._mngr.item_metadata(step)["state"]
        if metadata is None:
            raise FileNotFoundError(f"no readable tree metadata in {self.directory / str(step)}")
        tree = getattr(metadata, "tree", metadata)
        leaves = jax.tree.leaves(tree)
        if not leaves:
            raise FileNotFoundError(f"empty tree metadata in {self.directory / str(step)}")
        return {leaf.name: tuple(getattr(leaf, "shape", ())) for leaf in leaves}

    def _meta_path(self, step: int) -> Path:
        return self.directory / str(step) / "meta" / "metadata"

    def _read_meta(self, step: int) -> dict[str, Any] | None:
        """The JSON meta of one step, or None (with a warning) when missing or not JSON."""
        path = self._meta_path(step)
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            _warn(f"Checkpoint metadata {path} is unreadable ({type(err).__name__}: {err}).")
            return None
        if not isinstance(meta, dict):
            _warn(f"Checkpoint metadata {path} is not a JSON object.")
            return None
        return meta

    def restore_meta(self) -> dict[str, Any] | None:
        """The JSON metadata of the newest checkpoint whose metadata reads, without arrays.

        Garbage in the newest one falls back (with a warning) to the previous
        checkpoint's. None when there is no checkpoint or no metadata reads; callers
        that need the config turn that into a CheckpointError.
        """
        for i, step in enumerate(reversed(self.steps())):
            meta = self._read_meta(step)
            if meta is not None:
                if i:
                    _warn(f"Using the metadata of the checkpoint of step {step} instead.")
                return meta
        return None

    def _quarantine(self, step: int, err: Exception) -> None:
        """Move an unreadable checkpoint to `corrupt-<step>` (never deleted) and forget it."""
        target = self.directory / f"corrupt-{step}"
        n = 1
        while target.exists():  # the same step can go bad twice: keep both
            n += 1
            target = self.directory / f"corrupt-{step}.{n}"
        _warn(
            f"Checkpoint of step {step} in {self.directory} is corrupt: its files are unreadable "
            f"or truncated ({type(err).__name__}: {str(err)[:300]}). Moved it to {target} "
            "(nothing deleted) and falling back to the previous checkpoint."
        )
        if jax.process_index() == 0:  # one host moves it; the others see the move
            shutil.move(str(self.directory / str(step)), str(target))
        if jax.process_count() > 1:  # no host lists the steps again before the move is done
            multihost_utils.sync_global_devices(f"cascade-quarantine-{step}")
        # The manager caches its step list: rebuild it so the moved step is gone.
        self._mngr.close()
        self._mngr = _manager(
            self.directory, keep=self._keep, async_save=self._async, create=self._create
        )


def require_checkpoint(workdir: str | Path) -> Checkpointer:
    """A Checkpointer for a workdir that must already hold a trained stage."""
    directory = Path(workdir).expanduser().resolve() / "checkpoints"
    ckpt = Checkpointer(workdir, async_save=False, create=False) if directory.is_dir() else None
    if ckpt is None or not ckpt.steps():
        if ckpt is not None and ckpt.quarantined():
            raise ckpt.unusable_error()
        raise CheckpointError(
            f"No checkpoint found in {directory}. Train this stage first "
            f"(python -m cascade.main --mode=train --workdir={Path(workdir)} --config=...) "
            "or point the config at the workdir that holds it."
        )
    return ckpt
