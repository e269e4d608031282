"""Array shapes of a train-state tree as orbax names them, and one sentence naming where a
stored checkpoint's shapes differ from a requested tree's (a checkpoint from another config
is refused with it before any array is read)."""

from __future__ import annotations

from typing import Any

import orbax.checkpoint as ocp


def _short(name: str) -> str:
    return name.removesuffix(".value")  # NNX Variables add '.value' to every parameter path


def requested_shapes(abstract_state: Any) -> dict[str, tuple[int, ...]]:
    """Array name -> shape of a target tree, named exactly as orbax names stored arrays."""
    serialized = ocp.tree.serialize_tree(abstract_state, keep_empty_nodes=True)
    flat = ocp.tree.to_flat_dict(serialized, sep=".")
    return {name: tuple(leaf.shape) for name, leaf in flat.items() if hasattr(leaf, "shape")}


def mismatch_summary(stored: dict, requested: dict, limit: int = 3) -> str | None:
    """One sentence naming the first differing arrays, or None when the trees agree."""
    # The model's own parameters first: EMA and optimizer copies repeat the same shapes.
    requested = dict(sorted(requested.items(), key=lambda kv: not kv[0].startswith("params.")))
    shapes = [n for n in requested if n in stored and stored[n] != requested[n]]
    missing = [n for n in requested if n not in stored]
    extra = [n for n in stored if n not in requested]
    parts = []
    if shapes:
        shown = "; ".join(
            f"{_short(n)}: stored {stored[n]}, requested {requested[n]}" for n in shapes[:limit]
        )
        parts.append(f"{len(shapes)} array(s) differ in shape ({shown})")
    if missing:
        shown = ", ".join(f"{_short(n)} {requested[n]}" for n in missing[:limit])
        parts.append(f"{len(missing)} requested array(s) are not stored ({shown})")
    if extra:
        shown = ", ".join(f"{_short(n)} {stored[n]}" for n in extra[:limit])
        parts.append(f"{len(extra)} stored array(s) are not requested ({shown})")
    return "; ".join(parts) or None
