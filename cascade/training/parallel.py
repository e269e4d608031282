"""One device mesh for every stage, and parameter shardings from config rules.

Mesh axes are ("data", "fsdp"). The batch is split over both (every device
sees a different slice of the batch); parameters are sharded over "fsdp" by
the rules in `config.mesh.rules` (first regex that matches a parameter path
wins) and otherwise by the default FSDP rule: shard the largest dimension that
the fsdp axis divides, if the parameter is large enough to be worth it.

Several processes (hosts) form one mesh after `maybe_initialize_distributed`; data that
every process holds in full goes onto the mesh with `global_array`, and results come
back to every process with `to_host` (which gathers shards held by other processes).
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from cascade.configs import ConfigError

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


class DistributedSetupError(ConfigError):
    """The launcher's environment does not describe a multi-process run jax can join."""


# (process count, process id) variables of the launchers whose processes jax can find
# each other under; jax itself reads only JAX_COORDINATOR_ADDRESS, not the other two.
_LAUNCHER_RANKS = (
    ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"),
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
    ("SLURM_NTASKS", "SLURM_PROCID"),
)
# What jax's own SLURM detection (jax/_src/clusters/slurm_cluster.py) needs: srun sets them all.
_SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)
_HOW_TO = (
    "To start N processes by hand, give every process JAX_COORDINATOR_ADDRESS=<host of process "
    "0>:<free port>, JAX_NUM_PROCESSES=N and its own JAX_PROCESS_ID=0..N-1 (see README, "
    '"Scale: meshes, accelerators, many hosts").'
)


def _int_env(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise DistributedSetupError(f"{key}={env[key]!r} is not an integer. {_HOW_TO}") from None


def _ranks(env: Mapping[str, str]) -> tuple[int, int] | None:
    """(num_processes, process_id) from the first launcher that sets both, else None."""
    for count_key, id_key in _LAUNCHER_RANKS:
        if count_key in env and id_key in env:
            return _int_env(env, count_key), _int_env(env, id_key)
    return None


def _tpu_pod(env: Mapping[str, str]) -> bool:
    """A multi-host Cloud TPU slice: jax reads the workers from the env or the metadata server."""
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if (
        len([h for h in hosts.split(",") if h.strip()]) > 1
        or "MEGASCALE_COORDINATOR_ADDRESS" in env
    ):
        return True
    from jax._src import cloud_tpu_init  # set when `import jax` found a TPU VM

    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def distributed_arguments(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Keyword arguments for `jax.distributed.initialize`, or None for a one-process run.

    Launchers, first match wins:
      JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES, JAX_PROCESS_ID, or the count and rank of
        Open MPI / SLURM): passed explicitly (jax reads only the address from the env);
      Open MPI's mpirun (OMPI_COMM_WORLD_SIZE > 1): jax's "ompi" detection (Open MPI 4's ORTE);
      SLURM's srun (SLURM_NTASKS > 1): jax's "slurm" detection;
      a Cloud TPU VM / pod slice: jax's TPU detection.
    A launcher that says "several processes" without what jax needs to connect them is a
    DistributedSetupError naming the missing variable.
    """
    env = os.environ if env is None else env
    address = env.get("JAX_COORDINATOR_ADDRESS", "").strip()
    if address or "JAX_NUM_PROCESSES" in env or "JAX_PROCESS_ID" in env:
        if not address:
            raise DistributedSetupError(
                "JAX_NUM_PROCESSES / JAX_PROCESS_ID are set but JAX_COORDINATOR_ADDRESS is not. "
                + _HOW_TO
            )
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DistributedSetupError(
                f"JAX_COORDINATOR_ADDRESS={address!r} is not host:port (e.g. 10.0.0.1:1234)."
            )
        ranks = _ranks(env)
        if ranks is None:
            missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in env]
            raise DistributedSetupError(
                f"JAX_COORDINATOR_ADDRESS is set but {' and '.join(missing)} is not, and no "
                f"launcher (Open MPI, SLURM) says how many processes there are. {_HOW_TO}"
            )
        count, pid = ranks
        if count < 1 or not 0 <= pid < count:
            raise DistributedSetupError(
                f"Process id {pid} of {count} processes: the id must be in 0..{count - 1} and "
                f"the count at least 1. {_HOW_TO}"
            )
        return {"coordinator_address": address, "num_processes": count, "process_id": pid}
    if "OMPI_COMM_WORLD_SIZE" in env and _int_env(env, "OMPI_COMM_WORLD_SIZE") > 1:
        if "OMPI_MCA_orte_hnp_uri" not in env:
            raise DistributedSetupError(
                "Started by mpirun with several ranks, but OMPI_MCA_orte_hnp_uri (how jax finds "
                "rank 0 under Open MPI 4) is not set, as with Open MPI 5. Also set "
                "JAX_COORDINATOR_ADDRESS=<host of rank 0>:<free port> for every rank; counts "
                "and ranks are then read from OMPI_COMM_WORLD_SIZE / OMPI_COMM_WORLD_RANK."
            )
        return {"cluster_detection_method": "ompi"}
    if "SLURM_NTASKS" in env and _int_env(env, "SLURM_NTASKS") > 1:
        missing = [k for k in _SLURM_VARS if k not in env]
        if missing:
            raise DistributedSetupError(
                f"SLURM_NTASKS={env['SLURM_NTASKS']} but {', '.join(missing)} is not set: start "
                "one process per task with `srun` (not directly in the batch script), or set "
                "JAX_COORDINATOR_ADDRESS (the ranks then come from SLURM_NTASKS / SLURM_PROCID)."
            )
        return {"cluster_detection_method": "slurm"}
    if _tpu_pod(env):
        return {}  # jax asks the TPU metadata server / env for the workers
    return None


def maybe_initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
    """Join the multi-process run the launcher describes (see `distributed_arguments`).

    Call it first, before anything touches a jax device. A no-op for one process or when
    already joined; returns whether this process is part of a multi-process run. On the CPU
    platform cross-process collectives go through gloo (unless
    JAX_CPU_COLLECTIVES_IMPLEMENTATION chooses otherwise), so several processes on one
    machine form one mesh.
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    env = os.environ if env is None else env
    arguments = distributed_arguments(env)
    if arguments is None:
        return False
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in env:
        # Without collectives every CPU process is its own island and jitted code over a
        # mesh that spans processes fails; gloo (TCP) needs nothing installed.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = arguments.get("coordinator_address", "the coordinator the launcher names")
    try:
        jax.distributed.initialize(**arguments)
    except Exception as err:  # noqa: BLE001 - every failure to join is reported the same way
        raise DistributedSetupError(
            f"Could not join the multi-process run at {where} ({type(err).__name__}: "
            f"{str(err).strip()[:400]}). Check that every process was started with the same "
            "coordinator address (reachable from every host, port free on process 0), process "
            "count, and a distinct process id, and that this happens before any jax "
            "computation."
        ) from None
    print(
        f"jax.distributed: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local of {jax.device_count()} devices",
        flush=True,
    )
    return jax.process_count() > 1


def default_devices() -> list[Any]:
    """The devices a mesh spans when none are given: every device of every process."""
    return jax.devices()


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> Mesh:
    """Mesh of shape (data, fsdp) with Auto axes; `-1` in one axis takes the remaining devices
    (of `devices`, default `default_devices()`)."""
    devices = list(devices if devices is not None else default_devices())
    sizes = {"data": int(mesh_cfg.data), "fsdp": int(mesh_cfg.fsdp)}
    unknown = [axis for axis, size in sizes.items() if size == -1]
    if len(unknown) > 1:
        raise ConfigError(
            "config.mesh: at most one of data/fsdp may be -1 (use the remaining devices)."
        )
    known = int(np.prod([s for s in sizes.values() if s != -1]))
    if unknown:
        if len(devices) % known:
            raise ConfigError(
                f"config.mesh: {len(devices)} devices are not divisible by the fixed axes ({known})."
            )
        sizes[unknown[0]] = len(devices) // known
    total = sizes["data"] * sizes["fsdp"]
    if total != len(devices):
        raise ConfigError(
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


def _fingerprint(x: np.ndarray) -> np.ndarray:
    return np.array([zlib.crc32(x.tobytes()), x.size], np.int64)


def global_array(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Global jax Arrays from numpy data that every process holds in full (e.g. conditioning).

    Each process fills only its own devices' shards, so this is right for any sharding and any
    number of processes (unlike `pipeline.to_device`, whose input is each process's part). With
    several processes, data that differs between them is an error (a cheap checksum compare),
    not a silently mixed batch.
    """
    tree = jax.tree.map(np.asarray, tree)
    if jax.process_count() > 1:
        multihost_utils.assert_equal(
            jax.tree.map(_fingerprint, tree),
            "global_array: the processes hold different data for an array they should share.",
        )
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]), tree
    )


def to_host(tree: Any) -> Any:
    """Whole arrays as numpy on every process, also when they are sharded across processes.

    `jax.device_get` refuses an array with shards on another process; those are gathered with
    `multihost_utils.process_allgather` (a collective: every process must call this).
    """

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(fetch, tree)
