"""Multi-process JAX for real: two processes on this machine (CPU, gloo collectives, a
localhost coordinator) train, checkpoint, resume and sample like one process with 2 devices.
Plus the launcher-environment parsing behind `maybe_initialize_distributed`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_COMPILE_XLA_FLAGS, tiny_config

from cascade.training.parallel import DistributedSetupError, distributed_arguments

WORKER = Path(__file__).with_name("multihost_worker.py")
# Variables by which a launcher around pytest itself would reach the workers.
LAUNCHER_PREFIXES = ("JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_", "OMPI_")
TIMEOUT_S = 600  # per launch, a bound for hangs: startup and compilation take most of a minute


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra: str) -> dict[str, str]:
    """This process's env with `devices` CPU devices (conftest gave pytest 8) and no launcher.

    The tests' fast-compile XLA flags: compiling, not running, is what these tiny runs spend
    their time on, and every run here (multi-process and reference alike) compiles the same way.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE_XLA_FLAGS}"
    env.update(JAX_PLATFORMS="cpu", **extra)
    return env


def _two_process_envs() -> list[dict[str, str]]:
    """Two processes with one device each, joined through a localhost coordinator."""
    address = f"127.0.0.1:{_free_port()}"
    return [
        _env(1, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
        for i in range(2)
    ]


def _run_workers(runs: list[tuple[list[str], dict[str, str]]]) -> None:
    """Start one worker per (args, env) at once, wait for all; on failure show their stderr."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, env in runs
    ]
    deadline = time.monotonic() + TIMEOUT_S
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:  # e.g. a worker left waiting for a dead peer
            proc.kill()
            out, err = proc.communicate()
        results.append((proc.returncode, out, err))
    if any(rc != 0 for rc, _, _ in results):
        report = "\n".join(
            f"--- worker {i}: exit {rc}\n{out[-2000:]}\n{err[-6000:]}"
            for i, (rc, out, err) in enumerate(results)
        )
        pytest.fail(f"worker(s) failed or ran past {TIMEOUT_S} s:\n{report}")


def _params(result) -> list[np.ndarray]:
    keys = sorted((k for k in result if k.startswith("param_")), key=lambda k: int(k[6:]))
    return [result[k] for k in keys]


@pytest.mark.slow
def test_two_processes_train_resume_sample_like_one(data_dir, tmp_path):
    """2 processes x 1 device: train 2 steps, checkpoint; relaunch, resume to 4, sample.

    Equals one process with 2 devices fed the same global batches, uninterrupted to 4 steps:
    final params (some sharded across the processes by fsdp) and samples, on both processes.
    """
    from cascade.data import loading

    loading.get_builder(tiny_config("keyframes", data_dir).data)  # built once, before the workers
    multi = str(tmp_path / "multi")

    def args(workdir: str, steps: int, out: str, *extra: str) -> list[str]:
        flags = {"data_dir": data_dir, "workdir": workdir, "steps": steps, "out": out}
        return [f"--{key}={value}" for key, value in flags.items()] + list(extra)

    ref_out, out = str(tmp_path / "ref.npz"), str(tmp_path / "multi_{pid}.npz")
    # The one-process reference (uninterrupted, 4 steps) runs beside the first 2-process launch.
    reference = args(str(tmp_path / "ref"), 4, ref_out, "--sample", "--emulate_hosts", "2")
    first = args(multi, 2, str(tmp_path / "first_{pid}.npz"))
    _run_workers([(first, env) for env in _two_process_envs()] + [(reference, _env(2))])
    assert sorted(p.name for p in Path(multi, "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    # A second launch resumes from step 2, trains to 4, then samples from the re-read checkpoint.
    _run_workers([(args(multi, 4, out, "--sample"), env) for env in _two_process_envs()])

    ref = np.load(ref_out)
    for pid in range(2):
        got = np.load(out.replace("{pid}", str(pid)))
        assert int(got["step"]) == int(ref["step"]) == 4
        assert got["samples"].shape == (4, 4, 8, 8, 1)
        np.testing.assert_allclose(got["samples"], ref["samples"], rtol=1e-4, atol=1e-5)
        for a, b in zip(_params(ref), _params(got), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_launcher_environments():
    """What each launcher's env turns into, and one clear error for each broken env."""
    assert distributed_arguments({}) is None
    assert distributed_arguments({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
    explicit = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4"}
    assert distributed_arguments({**explicit, "JAX_PROCESS_ID": "3"}) == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 4,
        "process_id": 3,
    }
    # Open MPI 5 (no ORTE URI): the address by hand, count and rank from mpirun.
    ompi = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}
    assert distributed_arguments({"JAX_COORDINATOR_ADDRESS": "h:1", **ompi}) == {
        "coordinator_address": "h:1",
        "num_processes": 2,
        "process_id": 1,
    }
    uri = {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:5"}
    assert distributed_arguments({**ompi, **uri}) == {"cluster_detection_method": "ompi"}
    slurm = {
        "SLURM_JOB_ID": "7",
        "SLURM_STEP_NODELIST": "n[1-2]",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
    }
    assert distributed_arguments(slurm) == {"cluster_detection_method": "slurm"}
    assert distributed_arguments({"TPU_WORKER_HOSTNAMES": "w0,w1"}) == {}

    broken = [
        ({**explicit}, "JAX_PROCESS_ID"),
        ({**explicit, "JAX_PROCESS_ID": "4"}, "0..3"),
        ({**explicit, "JAX_PROCESS_ID": "one"}, "not an integer"),
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS is not"),
        ({**explicit, "JAX_COORDINATOR_ADDRESS": "10.0.0.1", "JAX_PROCESS_ID": "0"}, "host:port"),
        (ompi, "OMPI_MCA_orte_hnp_uri"),
        ({k: v for k, v in slurm.items() if k != "SLURM_STEP_NODELIST"}, "srun"),
    ]
    for env, message in broken:
        with pytest.raises(DistributedSetupError, match=message):
            distributed_arguments(env)


def test_bad_launcher_env_is_one_clear_error(tmp_path):
    """`cascade.main` under a launcher env that cannot work: exit 2, one message, nothing made."""
    env = _env(1, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="0")  # no coordinator address
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "cascade.main", "--config=configs/keyframes.py:tiny"]
        + [f"--workdir={workdir}", "--mode=train"],
        env=env,
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 2, proc.stderr
    assert "JAX_COORDINATOR_ADDRESS is not" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()
