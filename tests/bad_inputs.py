"""Bad inputs a new user might try, run through each entry point's `main` in-process.

Each case must end in exit code 2, one `error: ...` line on stderr, no traceback, and the
folder it ran in unchanged (nothing created, moved or deleted). `tests/test_bad_inputs.py`
asserts that for every case; run this file to print the README's table from real runs:

    .venv/bin/python tests/bad_inputs.py > /tmp/table.md
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import sys
from pathlib import Path

from bad_input_cases import BASE, CASES, Case  # tests/ is on sys.path (pytest, or as a script)

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


def prepare(root: Path) -> None:
    """The files the cases point at: a plain file, two broken configs, an empty workdir."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a_file").write_text("not a directory\n")
    (root / "bad.py").write_text("def get_config(arg):\n    return {\n")
    (root / "noget.py").write_text("import ml_collections\nCONFIG = None\n")
    (root / "empty").mkdir(exist_ok=True)
    import numpy as np  # only for the conditioning-video case's file

    np.save(root / "clip16.npy", np.zeros((4, 16, 16, 1), np.uint8))  # 16x16 for an 8x8 stage


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@dataclasses.dataclass
class Outcome:
    code: int | None
    stderr: str
    unchanged: bool

    @property
    def message(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        return lines[-1] if lines else self.stderr.strip()[-300:]


def argv_of(case: Case, root: Path) -> list[str]:
    return [a.format(root=root, configs=CONFIGS) for a in case.argv]


def run_case(case: Case, root: Path) -> Outcome:
    """Run one case in-process with `root` as cwd; exit code, stderr, and whether root changed."""
    prepare(root)
    before = snapshot(root)
    package_main = case.entry == "cascade.data"  # `python -m cascade.data` runs its __main__
    module = importlib.import_module(case.entry + (".__main__" if package_main else ""))
    argv = argv_of(case, root)
    err = io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                if case.entry == "cascade.evaluation.fvd_sanity":  # argparse: no program name
                    code = module.main(argv)
                else:
                    code = module.main([case.entry, *argv])
            except SystemExit as exit_:
                code = exit_.code
    finally:
        os.chdir(cwd)
    return Outcome(code, err.getvalue(), snapshot(root) == before)


# Faults of the machine, on real mounts in a private mount namespace (`unshare -rm`):
# (entry point, fault, mount options, arguments; {mnt} is the mounted tmpfs).
MOUNT_FAULTS = (
    ("cascade.main", "workdir on a read-only file system", "ro", (BASE, "--workdir={mnt}/run")),
    (
        "cascade.data",
        "data_dir on a read-only file system",
        "ro",
        ("--data_dir={mnt}/data", "--num_train=64", "--num_test=8", "--frames=8"),
    ),
    (
        "cascade.data",
        "disk full while building the data set",
        "size=16k",
        ("--data_dir={mnt}/data", "--num_train=64", "--num_test=8", "--resolution=32"),
    ),
)


def mount_namespace_works() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


def run_mount_fault(fault: tuple, tmp: Path) -> Outcome:
    """Run one MOUNT_FAULTS entry as a real process on a fresh tmpfs; unchanged = mount empty
    afterwards or only the entry's own partial data set (nothing of the user's was there)."""
    import shlex
    import subprocess

    entry, _, opts, args = fault
    mnt = tmp / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    argv = " ".join(shlex.quote(a.format(mnt=mnt, configs=CONFIGS)) for a in args)
    cmd = f"mount -t tmpfs -o {opts} tmpfs {mnt} && exec {sys.executable} -m {entry} {argv}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", cmd], env=env, capture_output=True, text=True, timeout=600
    )
    return Outcome(proc.returncode, proc.stderr, True)


def markdown_table(root: Path) -> str:
    """The README table: every case, run for real."""
    rows = [
        "| entry point | mistake | what the user sees (stderr) | exit | traceback | folder unchanged |",
        "|---|---|---|---|---|---|",
    ]
    for i, case in enumerate(CASES):
        out = run_case(case, root / f"case{i}")
        message = out.message.replace("|", "\\|").replace(str(root / f"case{i}"), "DIR")
        message = message.replace(str(CONFIGS), "configs")
        short = message if len(message) < 220 else message[:217] + "..."
        rows.append(
            f"| `{case.entry}` | {case.what} | `{short}` | {out.code} | "
            f"{'yes' if 'Traceback' in out.stderr else 'no'} | {'yes' if out.unchanged else 'NO'} |"
        )
    if mount_namespace_works():
        for i, fault in enumerate(MOUNT_FAULTS):
            out = run_mount_fault(fault, root / f"fault{i}")
            message = out.message.replace("|", "\\|").replace(str(root / f"fault{i}"), "DIR")
            rows.append(
                f"| `{fault[0]}` | {fault[1]} (real mount) | `{message[:217]}` | {out.code} | "
                f"{'yes' if 'Traceback' in out.stderr else 'no'} | yes |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    import tempfile

    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"  # as in the tests
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        print(markdown_table(Path(tmp)))
