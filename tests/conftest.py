"""Test setup: 8 simulated CPU devices, set before anything imports jax."""

import os

# LLVM optimisation level 0: the test models are tiny, so compiling dominates their cost, and
# matmuls/convolutions still run in the (unaffected) Eigen/oneDNN kernels. Measured on
# tests/test_train.py: 6.1 vs 7.8 CPU-min (-22%), same results. XLA's older loop emitters for
# elementwise fusions instead of its MLIR fusion emitters: 23-24 s -> 15 s of compiling for
# test_overfit_fixed_batch + test_dropout_remat_and_gradients (AMD EPYC, 2026-12-04), same
# run time. Not for benchmarks or real runs; processes the tests start (one device, as a
# user's) get these flags too.
FAST_COMPILE_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    " --xla_cpu_use_fusion_emitters=false"
)
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + f" --xla_force_host_platform_device_count=8 {FAST_COMPILE_XLA_FLAGS}"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One TFDS data_dir for the whole session; embedded sets are built into it on first use."""
    return str(tmp_path_factory.mktemp("tfds"))


def tiny_config(name: str, data_dir: str, **overrides):
    """configs/<name>.py:tiny pointed at the session data_dir, with dotted overrides."""
    from cascade import configs

    config = configs.load(f"{name}:tiny")
    config.data.data_dir = data_dir
    for dotted, value in overrides.items():
        section, _, key = dotted.rpartition(".")
        target = config
        for part in section.split(".") if section else ():
            target = target[part]
        target[key] = value
    return config


# Identical computations compiled by several tests (e.g. trainers built from one config)
# compile once per session: XLA executables are cached on disk.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Parallel test workers (pytest-xdist) share this cache. Without a size limit JAX takes no file
# lock; an entry read while another worker is still writing it fails to deserialize, which JAX
# reports as a warning and answers by compiling (a size limit would need every writer to keep
# LRU timestamps, which a run outside pytest does not).


def _write_each_checkpoint_array_from_one_replica():
    """Orbax writes a replicated array as one slice per replica ("replica-parallel"): with the
    8 simulated CPU devices that is a jitted slice per array and device, all in one host's
    memory, for nothing (measured on a tiny keyframe run: 4.4 s per checkpoint write -> 2.0 s).
    Each array is written whole from its first replica instead, as orbax does on GPUs; the
    stored arrays are the same. A user's run on one CPU device has one replica anyway."""
    import jax
    import orbax.checkpoint as ocp

    handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=False)
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


_write_each_checkpoint_array_from_one_replica()


def _one_device_by_default():
    """The 8 simulated devices are for the tests of sharding, which name them (`devices=`,
    their own meshes) or are marked `all_devices`. Every other in-process run trains and
    samples on one device, as a user's CPU does: 8 replicas of a tiny model on 2 cores cost
    time in compiling SPMD programs and running 8 slivers of every op (whole suite, summed
    over both workers: 3642 s -> 3029 s, compiling 1390 s -> 1141 s). Returns the default it
    replaced."""
    import jax

    from cascade.training import parallel

    all_devices = parallel.default_devices
    parallel.default_devices = lambda: jax.devices()[:1]
    return all_devices


_ALL_DEVICES = _one_device_by_default()


@pytest.fixture(autouse=True)
def _all_devices_when_marked(request, monkeypatch):
    if request.node.get_closest_marker("all_devices"):
        from cascade.training import parallel

        monkeypatch.setattr(parallel, "default_devices", _ALL_DEVICES)


def pytest_collection_modifyitems(config, items):
    """Files with end-to-end (`slow`) tests first. `make test` hands whole files to its two
    workers as they free up (`--dist loadfile --no-loadscope-reorder`); when a minutes-long
    file comes last, one worker idles while the other finishes it. Started first, the quick
    files fill in at the end instead."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: file order kept
