"""I3D forward speed and feature agreement: this tree's `cascade.models.i3d` against a
baseline copy of the module, in one process, on the same inputs, timed interleaved.

    python -m cascade.evaluation.i3d_bench                 # baseline: git HEAD's i3d.py
    python -m cascade.evaluation.i3d_bench --baseline git:b67632a --repeats 7 --batch 2
    python -m cascade.evaluation.i3d_bench --baseline /tmp/i3d_old.py

The inputs are real-looking FVD inputs: moving_digits clips (64 x 64) put through the FVD
preprocessing (TF1 bilinear resize to 224 x 224, [-1, 1], 3 channels). Both versions run
with the same Kinetics-400 params, each jitted for a [batch, 16, 224, 224, 3] input; the
timings alternate (baseline, this tree, baseline, ...) so a load change on a shared
machine hits both alike, and the ratio reported is the median of the per-pair ratios.
GFLOP/s use the baseline's XLA FLOP count for both (the useful work of the network; the
2D reformulation makes XLA count ~10% more: per-tap adds, zero-padded frames).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cascade.data.builders.moving_digits import render_clip
from cascade.evaluation import fvd
from cascade.evaluation.benchmarking import compiled_flops
from cascade.models import i3d

MODULE_PATH = "cascade/models/i3d.py"


def load_baseline(spec: str) -> types.ModuleType:
    """The baseline I3D module from a file path or `git:REV` (that revision's i3d.py)."""
    if spec.startswith("git:"):
        root = pathlib.Path(__file__).resolve().parents[2]
        source = subprocess.run(
            ["git", "show", f"{spec[4:]}:{MODULE_PATH}"],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        path = pathlib.Path(tempfile.mkdtemp(prefix="i3d_baseline_")) / "i3d_baseline.py"
        path.write_text(source)
    else:
        path = pathlib.Path(spec)
    module_spec = importlib.util.spec_from_file_location("i3d_baseline", path)
    if module_spec is None or module_spec.loader is None:
        raise FileNotFoundError(f"cannot load a baseline I3D module from {spec!r}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def digit_inputs(batch: int, seed: int = 0) -> jax.Array:
    """[batch, 16, 224, 224, 3] float32: moving_digits clips after the FVD preprocessing."""
    rng = np.random.default_rng(seed)
    clips = np.stack([render_clip(rng, 16, 64, "test")["video"] for _ in range(batch)])
    protocol = fvd.FVDProtocol(num_videos=max(batch, 2), batch_size=batch)
    return jax.jit(lambda v: fvd.preprocess(v, protocol))(jnp.asarray(clips))


def run(baseline: str, batch: int, repeats: int) -> dict[str, Any]:
    """Compiles both versions, checks their features agree, times them interleaved.

    Returns seconds per clip (medians), GFLOP/s, the median per-pair speed-up and the max
    abs difference of the 400 logits and the 1024-d AvgPool features.
    """
    old = load_baseline(baseline)
    params = i3d.load_params()
    videos = digit_inputs(batch)
    compiled = {}
    for label, module in (("baseline", old), ("new", i3d)):
        for endpoint in ("Logits", "AvgPool"):
            fn = jax.jit(lambda p, v, m=module, e=endpoint: m.i3d_apply(p, v, endpoint=e))
            compiled[label, endpoint] = fn.lower(params, videos).compile()
    diffs = {
        endpoint: float(
            jnp.abs(
                compiled["baseline", endpoint](params, videos)
                - compiled["new", endpoint](params, videos)
            ).max()
        )
        for endpoint in ("Logits", "AvgPool")
    }
    flops = compiled_flops(compiled["baseline", "Logits"])
    times: dict[str, list[float]] = {"baseline": [], "new": []}
    for _ in range(repeats):
        for label in ("baseline", "new"):
            start = time.perf_counter()
            jax.block_until_ready(compiled[label, "Logits"](params, videos))
            times[label].append((time.perf_counter() - start) / batch)
    ratios = [b / n for b, n in zip(times["baseline"], times["new"], strict=True)]
    per_clip = {label: statistics.median(ts) for label, ts in times.items()}
    return {
        "batch": batch,
        "repeats": repeats,
        "gflop_per_clip": flops / batch / 1e9,
        "seconds_per_clip": per_clip,
        "gflops_per_s": {k: flops / batch / 1e9 / v for k, v in per_clip.items()},
        "speedup_median": statistics.median(ratios),
        "speedups": ratios,
        "max_abs_diff": diffs,
        "logits_abs_max": float(jnp.abs(compiled["new", "Logits"](params, videos)).max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="git:HEAD", help="i3d.py path or git:REV")
    parser.add_argument("--batch", type=int, default=1, help="clips per jitted call")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing pairs")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    result = run(args.baseline, args.batch, args.repeats)
    s, g = result["seconds_per_clip"], result["gflops_per_s"]
    print(f"I3D 16x224x224, batch {args.batch}, {result['gflop_per_clip']:.1f} GFLOP per clip")
    print(f"load average at start {load:.2f}, at end {os.getloadavg()[0]:.2f}")
    for label in ("baseline", "new"):
        print(f"  {label:8s} {s[label]:.3f} s/clip  {g[label]:.1f} GFLOP/s")
    ratios = ", ".join(f"{r:.2f}" for r in result["speedups"])
    print(f"  speed-up (median of interleaved pairs) {result['speedup_median']:.2f}x  [{ratios}]")
    d = result["max_abs_diff"]
    print(
        f"  max |new - baseline|: logits {d['Logits']:.2e} (|logits| <= "
        f"{result['logits_abs_max']:.2f}), AvgPool features {d['AvgPool']:.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
