"""One device mesh for every stage, and parameter shardings from config rules.

Mesh axes are ("data", "fsdp"). The batch is split over both (every device
sees a different slice of the batch); parameters are sharded over "fsdp" by
the rules in `config.mesh.rules` (first regex that matches a parameter path
wins) and otherwise by the default FSDP rule: shard the largest dimension that
the fsdp axis divides, if the parameter is large enough to be worth it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def maybe_initialize_distributed() -> None:
    """Join a multi-host run when the launcher says so (no-op on one host).

    `jax.distributed.initialize()` reads the coordinator from the environment on
    TPU pods and SLURM/Open MPI GPU clusters; elsewhere set
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (see README).
    """
    launched = any(
        key in os.environ
        for key in (
            "JAX_COORDINATOR_ADDRESS",
            "TPU_WORKER_HOSTNAMES",
            "SLURM_NTASKS",
            "OMPI_COMM_WORLD_SIZE",
        )
    )
    if launched and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> Mesh:
    """Mesh of shape (data, fsdp) with Auto axes; `-1` in one axis takes the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = {"data": int(mesh_cfg.data), "fsdp": int(mesh_cfg.fsdp)}
    unknown = [axis for axis, size in sizes.items() if size == -1]
    if len(unknown) > 1:
        raise ValueError(
            "config.mesh: at most one of data/fsdp may be -1 (use the remaining devices)."
        )
    known = int(np.prod([s for s in sizes.values() if s != -1]))
    if unknown:
        if len(devices) % known:
            raise ValueError(
                f"config.mesh: {len(devices)} devices are not divisible by the fixed axes ({known})."
            )
        sizes[unknown[0]] = len(devices) // known
    total = sizes["data"] * sizes["fsdp"]
    if total != len(devices):
        raise ValueError(
            f"config.mesh: data={sizes['data']} x fsdp={sizes['fsdp']} = {total} devices, "
            f"but {len(devices)} are available. Set --config.mesh.data=-1 to use all of them."
        )
    grid = np.asarray(devices).reshape(sizes["data"], sizes["fsdp"])
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split over every data-parallel mesh axis."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def _path_string(path: tuple[Any, ...]) -> str:
    """'down/0/conv/kernel' from a jax key path (Variable `.value` attributes dropped)."""
    parts = []
    for key in path:
        name = getattr(key, "key", getattr(key, "idx", getattr(key, "name", key)))
        if name == "value":
            continue
        parts.append(str(name))
    return "/".join(parts)


def _fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> PartitionSpec:
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return PartitionSpec(*spec)
    return PartitionSpec()


def param_specs(
    abstract_params: Any,
    mesh: Mesh,
    rules: Sequence[tuple[str, Sequence[str | None]]] = (),
    min_size: int = 2**14,
) -> Any:
    """PartitionSpecs for a parameter tree (arrays or ShapeDtypeStructs).

    `rules` is a list of (regex, spec) pairs matched against paths like
    "down/0/conv/kernel"; spec entries are mesh axis names or None. A matched
    spec whose axis does not divide the dimension is a config error.
    """
    compiled = [(re.compile(pattern), tuple(spec)) for pattern, spec in rules]

    def spec_for(path, leaf):
        name = _path_string(path)
        for pattern, spec in compiled:
            if pattern.search(name):
                if len(spec) != len(leaf.shape):
                    raise ValueError(
                        f"config.mesh.rules: rule {pattern.pattern!r} gives spec {spec} of rank "
                        f"{len(spec)} for parameter {name} of shape {leaf.shape}."
                    )
                for dim, axis in zip(leaf.shape, spec, strict=True):
                    if axis is not None and dim % mesh.shape[axis]:
                        raise ValueError(
                            f"config.mesh.rules: {name} {leaf.shape} cannot split a dimension of "
                            f"{dim} over mesh axis {axis!r} of size {mesh.shape[axis]}."
                        )
                return PartitionSpec(*spec)
        return _fsdp_spec(tuple(leaf.shape), mesh.shape["fsdp"], min_size)

    return jax.tree_util.tree_map_with_path(spec_for, abstract_params)


def shardings_for(tree_specs: Any, mesh: Mesh) -> Any:
    return jax.tree.map(
        lambda spec: NamedSharding(mesh, spec),
        tree_specs,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )
