"""Measurement helpers shared by every benchmark: FLOPs, step time, peak, MFU.

Speed is measured here, never in tests. Every number comes from the compiled
XLA executable (cost analysis) or a wall clock around `block_until_ready`.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp


def compiled_flops(program: Any, compiled: Any = None) -> float:
    """FLOPs XLA counts for one call of a compiled executable (`jit(f).lower(..).compile()`),
    or of a lowered program (`jit(f).lower(..)`, analysed before optimisation). `compiled`:
    the lowered program's executable if the caller has it, used (instead of compiling again)
    where the backend analyses only compiled programs."""
    analysis = program.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX returned one dict per device
        analysis = analysis[0] if analysis else {}
    flops = float((analysis or {}).get("flops", 0.0))
    if not flops and hasattr(program, "compile"):
        # Some backends analyse only compiled programs: on an H200 (jax 0.11.2) a lowered
        # program reported no FLOPs, which made every sampling loop's MFU 0.
        return compiled_flops(compiled if compiled is not None else program.compile())
    return flops


def median_seconds(
    fn: Callable[..., Any], args: Sequence[Any], warmup: int = 2, iters: int = 5
) -> float:
    """Median wall time of `fn(*args)` after `warmup` calls, synchronised on the outputs."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_gflops(n: int | None = None, dtype: Any = jnp.float32, iters: int = 10) -> float:
    """Measured (not datasheet) [n, n] x [n, n] matmul throughput of the default device in
    GFLOP/s, in `dtype` (a model computing in bf16 is measured against the bf16 peak).
    `n` defaults to 2048 on CPU and 8192 on accelerators (a 2048^3 product there is over in
    microseconds, too short to time with a host clock)."""
    n = n or (2048 if jax.default_backend() == "cpu" else 8192)
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), dtype)
    b = jax.random.normal(key_b, (n, n), dtype)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    times = []
    for _ in range(iters):  # a peak is the best run, not the typical one
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / min(times) / 1e9


def peak_memory_bytes() -> int:
    """Peak device memory if the backend reports it (GPU/TPU), else the process peak RSS (CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def benchmark_compiled(
    jitted: Callable[..., Any],
    args: Sequence[Any],
    *,
    name: str,
    params: int,
    warmup: int = 2,
    iters: int = 5,
    peak_gflops: float | None = None,
    flops: float | None = None,
) -> dict[str, Any]:
    """Compile `jitted` for `args`, time it, and return the benchmark JSON fields.

    FLOPs are XLA's count of the lowered program, before optimisation: the arithmetic the
    program asks for. The optimised executable's count can be far off: the flat optimizer
    update (`training.flat_update`) leaves fusions that slice one parameter out of
    elementwise work on the whole parameter vector, which XLA's cost analysis counts at the
    vector's length (keyframes `tiny`: 284 MFLOP per step against 186 lowered; 192 for the
    per-tensor update's executable). `flops`: the call's FLOPs when XLA's count is wrong
    anyway (it counts a while loop's body once: pass `cost.xla_flops(...)["flops"]`).

    `jitted` must not donate its inputs (the same args are reused every call).
    Fields: name, device, params, flops_per_step, step_time_s (median),
    achieved_gflops, peak_matmul_gflops, mfu, peak_memory_bytes.
    """
    lowered = jitted.lower(*args)
    compiled = lowered.compile()
    flops = compiled_flops(lowered, compiled) if flops is None else float(flops)
    seconds = median_seconds(compiled, args, warmup=warmup, iters=iters)
    peak = peak_gflops if peak_gflops is not None else matmul_peak_gflops()
    achieved = flops / seconds / 1e9
    return {
        "name": name,
        "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "params": int(params),
        "flops_per_step": flops,
        "step_time_s": seconds,
        "achieved_gflops": achieved,
        "peak_matmul_gflops": peak,
        "mfu": achieved / peak if peak else 0.0,
        "peak_memory_bytes": peak_memory_bytes(),
    }
