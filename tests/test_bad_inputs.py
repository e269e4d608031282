"""Every user mistake is one clear message, exit code 2, no traceback, nothing written.

The cases live in tests/bad_inputs.py (which also prints the README's table from real runs).
They run in-process through each entry point's `main` (they fail before anything compiles);
a few run as real processes to prove the process exit code, and two run against a real
read-only / full file system (a private mount namespace, where the machine allows one).
"""

import errno
import os
import subprocess
import sys

import pytest
from bad_inputs import (
    CASES,
    MOUNT_FAULTS,
    REPO,
    Case,
    argv_of,
    mount_namespace_works,
    prepare,
    run_case,
    run_mount_fault,
    snapshot,
)
from conftest import FAST_COMPILE_XLA_FLAGS

# A mistake that exists only with several devices (the tests' meshes default to one).
ON_ALL_DEVICES = {"batch that does not split over devices"}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c,
            id=f"{c.entry}:{c.what}",
            marks=pytest.mark.all_devices if c.what in ON_ALL_DEVICES else (),
        )
        for c in CASES
    ],
)
def test_bad_input_is_one_clear_message(case: Case, tmp_path):
    out = run_case(case, tmp_path / "case")
    assert out.code == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.message.startswith("error: ") and case.expect in out.message, out.stderr
    assert out.unchanged, "the case changed files in its folder"


def _process(entry: str, argv: list[str], cwd, env_extra=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = FAST_COMPILE_XLA_FLAGS  # one device, as a user has
    env["PYTHONPATH"] = str(REPO)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", entry, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# Cheap to start (no TensorFlow import): the `sys.exit(main())` pattern is the same everywhere.
SUBPROCESS_CASES = [
    c
    for c in CASES
    if c.entry == "cascade.main"
    and c.what in ("unknown key (README's example)", "config file with a syntax error")
]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.what for c in SUBPROCESS_CASES])
def test_process_exit_code_is_2(case: Case, tmp_path):
    prepare(tmp_path)
    before = snapshot(tmp_path)
    proc = _process(case.entry, argv_of(case, tmp_path), tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and case.expect in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert snapshot(tmp_path) == before


def test_error_from_a_deep_layer_is_reported(monkeypatch, tmp_path, capsys):
    """A full disk / read-only mount met late (e.g. inside TFDS or orbax, which wrap the OS
    error in a RuntimeError) is still one message, not a traceback; a bug keeps its traceback."""
    from cascade import cli

    def full_disk():
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "ckpt"))
        except OSError as err:
            raise RuntimeError("Failed to finalize writing of split 'train'") from err

    assert cli.guarded(full_disk) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot use") and "No space left" in err

    def wrapped_text():
        raise ValueError("write() failed: Read-only file system; writing /x/y")

    assert cli.guarded(wrapped_text) == 2
    assert "read-only file system" in capsys.readouterr().err

    def bug():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        cli.guarded(bug)


@pytest.mark.skipif(not mount_namespace_works(), reason="no private mount namespaces here")
def test_real_read_only_file_system(tmp_path):
    """A real read-only mount (private namespace) as workdir: refused up front, one message.
    (The slower full-disk and read-only data_dir runs are in the README table's generator.)"""
    out = run_mount_fault(MOUNT_FAULTS[0], tmp_path)
    assert out.code == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.message.startswith("error: ") and "Read-only file system" in out.message
