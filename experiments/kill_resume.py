"""kill -9 at random moments, then resume: the run ends bit-identical to an uninterrupted one.

    python -m experiments.kill_resume --trials=12 --out=results/kill_resume.md

Each trial trains `configs/keyframes.py:tiny` through `python -m cascade.main --mode=train`
with a checkpoint after every step (asynchronous writes), SIGKILLs it, reruns the same
command to completion, and compares every array of the final checkpoint (params,
optimizer state, EMA) with an uninterrupted run's, bit for bit. Kill moments alternate
between a random time while the run steps and the moment a new `<step>` directory
appears with orbax's temporary suffix (a checkpoint write in flight). Prints and writes
a markdown table: trial, how the kill was aimed, kill time, newest checkpoint on disk
when killed, whether a write was in flight, the step the rerun resumed from, identical?
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TMP_MARK = ".orbax-checkpoint-tmp"


def train_command(workdir: Path, data_dir: str, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cascade.main",
        "--config=configs/keyframes.py:tiny",
        f"--workdir={workdir}",
        "--mode=train",
        f"--config.train.steps={steps}",
        "--config.train.checkpoint_every=1",
        "--config.train.num_samples=0",
        f"--config.data.data_dir={data_dir}",
    ]


def subprocess_env() -> dict[str, str]:
    """One CPU device (no simulated devices), quiet TF, the repo's shared XLA compile cache.

    The caller's other XLA flags are kept (the tests' fast-compile flags: every run of a trial
    compiles the same program, so only the first compiles and the rest read the cache)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))
    return env


def run_to_end(workdir: Path, data_dir: str, steps: int) -> int:
    """Train to the end; returns the step it resumed from (0 for a fresh start)."""
    proc = subprocess.run(
        train_command(workdir, data_dir, steps),
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"training in {workdir} failed ({proc.returncode}):\n{proc.stderr}")
    resumed = re.search(r"Resuming \S+ from step (\d+)", proc.stdout)
    return int(resumed.group(1)) if resumed else 0


def _entries(ckpt_dir: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(ckpt_dir)]
    except FileNotFoundError:
        return []


def _snapshot(ckpt_dir: Path) -> set[tuple[str, int]]:
    """(name, inode) of every entry: a stale temporary dir that orbax recreates counts as new."""
    try:
        return {(e.name, e.inode()) for e in os.scandir(ckpt_dir)}
    except FileNotFoundError:
        return set()


def _step_of(name: str) -> int:
    head = name.split(".")[0]
    return int(head) if head.isdigit() else -1


def committed_steps(workdir: Path) -> list[int]:
    return sorted(int(n) for n in _entries(workdir / "checkpoints") if n.isdigit())


def kill_during_run(
    workdir: Path, data_dir: str, steps: int, *, aim: str, delay: float, min_step: int = 0
) -> dict:
    """Start training and SIGKILL it: `delay` s after stepping starts (aim='time'), or as soon
    as a checkpoint write of a step > min_step is in flight (aim='write'); aim='none' lets it
    finish (then `stepping_s` says how long it stepped).

    Stepping has started once the first checkpoint directory (temporary or final) shows up.
    Returns what was on disk at the kill."""
    ckpt_dir = workdir / "checkpoints"
    before = _snapshot(ckpt_dir)
    proc = subprocess.Popen(
        train_command(workdir, data_dir, steps),
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = None
    in_flight = False
    try:
        while proc.poll() is None:
            names = {name for name, _ in _snapshot(ckpt_dir) - before}
            now = time.perf_counter()
            if started is None and names:
                started = now
            writes = [n for n in names if TMP_MARK in n and _step_of(n) > min_step]
            if aim == "write" and writes:
                in_flight = True
                break
            if aim == "time" and started is not None and now - started >= delay:
                break
            time.sleep(0.001)
        killed_at = time.perf_counter()
        if aim != "none":
            proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    finished = proc.returncode == 0
    entries = _entries(ckpt_dir)
    return {
        "kill_s": None if finished or started is None else killed_at - started,
        "finished_before_kill": finished,
        "newest_at_kill": max(committed_steps(workdir), default=0),
        "write_in_flight": in_flight or any(TMP_MARK in n for n in entries),
        "stepping_s": None if started is None else killed_at - started,
    }


def final_state(workdir: Path) -> tuple[int, dict[str, np.ndarray]]:
    """The newest checkpoint's step and every array in it, by name."""
    import orbax.checkpoint as ocp

    step = max(committed_steps(workdir))
    tree = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
    flat = ocp.tree.to_flat_dict(tree, sep=".")
    return step, {name: np.asarray(value) for name, value in flat.items()}


def identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def run_trials(trials: int, root: Path, data_dir: str, steps: int, seed: int) -> list[dict]:
    """An uninterrupted reference run, then `trials` kill-and-resume runs compared with it."""
    reference_dir = root / "reference"
    watched = kill_during_run(reference_dir, data_dir, steps, aim="none", delay=0.0)
    if not watched["finished_before_kill"]:
        raise RuntimeError(f"the reference run in {reference_dir} failed")
    span = watched["stepping_s"]  # 'time' kills spread over the reference run's stepping
    print(f"reference run: {span:.1f} s of stepping", flush=True)
    _, reference = final_state(reference_dir)
    rng = random.Random(seed)
    rows = []
    for trial in range(trials):
        workdir = root / f"trial_{trial:02d}"
        aim = "write" if trial % 2 else "time"
        delay = rng.uniform(0.0, span)
        row = {"trial": trial, "aim": aim}
        row.update(
            kill_during_run(
                workdir, data_dir, steps, aim=aim, delay=delay, min_step=rng.randrange(steps - 1)
            )
        )
        if row["finished_before_kill"]:
            span = max(0.5 * span, 0.2)  # the run was faster than the kill: aim earlier
        row["resumed_from"] = run_to_end(workdir, data_dir, steps)
        final_step, state = final_state(workdir)
        row["final_step"] = final_step
        row["identical"] = final_step == steps and identical(state, reference)
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


HEADER = (
    "| trial | kill aimed at | kill time (s after stepping began) | newest checkpoint at kill "
    "| write in flight | resumed from step | bit-identical |\n|---|---|---|---|---|---|---|"
)


def format_row(row: dict) -> str:
    kill = "finished first" if row["finished_before_kill"] else f"{row['kill_s']:.3f}"
    aim = "random time" if row["aim"] == "time" else "checkpoint write"
    return (
        f"| {row['trial']} | {aim} | {kill} | {row['newest_at_kill']} | "
        f"{'yes' if row['write_in_flight'] else 'no'} | {row['resumed_from']} | "
        f"{'yes' if row['identical'] else 'NO'} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--steps", type=int, default=10, help="training steps of every run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--out", default="results/kill_resume.md", help="markdown table")
    parser.add_argument("--data_dir", default="results/data", help="TFDS data_dir")
    parser.add_argument("--workdir", default=None, help="where runs go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.steps < 2:
        parser.error("--trials must be >= 1 and --steps >= 2")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        rows = run_trials(
            args.trials, root, str(Path(args.data_dir).resolve()), args.steps, args.seed
        )
    good = sum(r["identical"] for r in rows)
    killed = sum(not r["finished_before_kill"] for r in rows)
    in_flight = sum(r["write_in_flight"] for r in rows)
    table = "\n".join([HEADER, *map(format_row, rows)])
    summary = (
        f"{good}/{len(rows)} trials bit-identical to the uninterrupted run "
        f"({killed} killed mid-run, {in_flight} with a checkpoint write in flight; "
        f"{args.steps} steps, a checkpoint every step, asynchronous writes)."
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{table}\n\n{summary}\n")
    print(f"\n{table}\n\n{summary}\nwrote {out}")
    return 0 if good == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
