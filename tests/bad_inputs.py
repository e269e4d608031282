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

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


@dataclasses.dataclass(frozen=True)
class Case:
    entry: str  # module whose main(argv) runs
    what: str  # the mistake, in words
    argv: tuple[str, ...]  # {root}: the case's folder (also the cwd); {configs}: configs/
    expect: str  # a piece of the message the user must see


M, B, D = "cascade.main", "cascade.bench", "cascade.distillation"
BASE = "--config={configs}/keyframes.py:tiny"
WD = "--workdir={root}/run"


def _main(*args: str) -> tuple[str, ...]:
    return (BASE, WD, *args)


CASES = (
    Case(M, "unknown key (README's example)", _main("--config.train.stpes=5"), "'train.steps'"),
    Case(M, "unknown section", _main("--config.trian.steps=5"), "no key 'trian'"),
    Case(
        M, "unknown preset", ("--config={configs}/keyframes.py:huge", WD), "unknown preset 'huge'"
    ),
    Case(M, "missing config file", ("--config={configs}/nope.py", WD), "does not exist"),
    Case(M, "config file with a syntax error", ("--config={root}/bad.py", WD), "syntax error"),
    Case(M, "config file without get_config", ("--config={root}/noget.py", WD), "get_config"),
    Case(M, "no --config", (WD,), "--config is required"),
    Case(M, "no --workdir", (BASE,), "--workdir is required"),
    Case(M, "empty --workdir", (BASE, "--workdir="), "--workdir is required"),
    Case(M, "unknown flag", _main("--bogus"), "Unknown command line flag 'bogus'"),
    Case(M, "unknown mode", _main("--mode=fly"), "train|sample|evaluate"),
    Case(M, "integer key given text", _main("--config.train.steps=abc"), "is an integer"),
    Case(M, "boolean key given text", _main("--config.train.async_checkpointing=maybe"), "boolean"),
    Case(M, "a section set to a value", _main("--config.train=5"), "is a section"),
    Case(M, "negative train.steps", _main("--config.train.steps=-5"), "train.steps must be >= 1"),
    Case(M, "zero batch size", _main("--config.train.batch_size=0"), "batch_size must be >= 1"),
    Case(M, "negative learning rate", _main("--config.train.learning_rate=-1e-3"), "> 0"),
    Case(M, "ema_decay = 1", _main("--config.train.ema_decay=1.0"), "ema_decay must be in"),
    Case(M, "checkpoint_every = 0", _main("--config.train.checkpoint_every=0"), ">= 1"),
    Case(M, "sample.steps = 0", _main("--config.sample.steps=0"), "sample.steps must be >= 1"),
    Case(M, "zero frame stride", _main("--config.view.frame_stride=0"), "view.frame_stride"),
    Case(M, "view longer than the clips", _main("--config.view.frames=64"), "data.frames=8"),
    Case(M, "resolution that does not divide", _main("--config.view.resolution=5"), "divide"),
    Case(
        M,
        "extra_images on an SR stage (ignored)",
        ("--config={configs}/temporal_sr.py:tiny", WD, "--config.view.extra_images=2"),
        "keyframe stage feature",
    ),
    Case(
        M,
        "guidance on an unconditional stage (ignored)",
        ("--config={configs}/spatial_sr.py:tiny", WD, "--config.sample.guidance_scale=2"),
        "unconditional",
    ),
    Case(
        M,
        "label dropout on an unconditional stage (ignored)",
        ("--config={configs}/temporal_sr.py:tiny", WD, "--config.diffusion.label_dropout=0.1"),
        "unconditional",
    ),
    Case(M, "unknown data set", _main("--config.data.name=imagenet"), "not a known data set"),
    Case(M, "mesh axis of 0", _main("--config.mesh.data=0"), "config.mesh.data"),
    Case(M, "mesh that does not divide the devices", _main("--config.mesh.data=3"), "devices"),
    Case(
        M,
        "batch that does not split over devices",
        _main("--config.train.batch_size=3"),
        "divisible",
    ),
    Case(M, "bad regex in mesh rules", _main("--config.mesh.rules=[('(', (None,))]"), "bad regex"),
    Case(M, "data_dir is a file", _main("--config.data.data_dir={root}/a_file"), "is a file"),
    Case(M, "workdir is a file", (BASE, "--workdir={root}/a_file"), "is a file"),
    Case(M, "workdir inside a file", (BASE, "--workdir={root}/a_file/run"), "is a file"),
    Case(M, "workdir not writable", (BASE, "--workdir=/sys/cascade-run"), "cannot write"),
    Case(M, "remote workdir (gs://)", (BASE, "--workdir=gs://bucket/run"), "remote paths"),
    Case(M, "sample before training", _main("--mode=sample"), "No checkpoint found"),
    Case(
        M,
        "sample from an empty workdir",
        (BASE, "--workdir={root}/empty", "--mode=sample"),
        "No checkpoint",
    ),
    Case(
        M, "--num_samples=0", _main("--mode=sample", "--num_samples=0"), "num_samples must be >= 1"
    ),
    Case(
        M,
        "train a cascade config",
        ("--config={configs}/cascade.py", WD),
        "not trained itself",
    ),
    Case(
        M,
        "cascade whose stages are not trained",
        (
            "--config={configs}/cascade.py",
            WD,
            "--mode=sample",
            "--config.stages.keyframes.workdir={root}/empty",
        ),
        "config.stages.keyframes.workdir",
    ),
    Case(
        M,
        "aug_t on the cascade's keyframe stage (ignored)",
        (
            "--config={configs}/cascade.py",
            WD,
            "--mode=sample",
            "--config.stages.keyframes.aug_t=0.2",
        ),
        "no key 'aug_t'",
    ),
    Case(B, "bench a cascade config", ("--config={configs}/cascade.py",), "none"),
    Case(
        B, "bench with --iters=0", ("--config={configs}/keyframes.py:tiny", "--iters=0"), "--iters"
    ),
    Case(
        D, "distil without a teacher", ("--config={configs}/distill.py:tiny", WD), "teacher_workdir"
    ),
    Case(
        D,
        "distil from an untrained teacher",
        ("--config={configs}/distill.py:tiny", WD, "--config.distill.teacher_workdir={root}/empty"),
        "No checkpoint found",
    ),
    Case(
        D,
        "distillation rounds that do not halve",
        (
            "--config={configs}/distill.py:tiny",
            WD,
            "--config.distill.teacher_workdir={root}/empty",
            "--config.distill.start_steps=6",
        ),
        "power of two",
    ),
    Case(
        D,
        "unknown distillation weighting",
        (
            "--config={configs}/distill.py:tiny",
            WD,
            "--config.distill.teacher_workdir={root}/empty",
            "--config.distill.weighting=l1",
        ),
        "weighting",
    ),
    Case(D, "distil with a stage config", (BASE, WD), "distillation config"),
    Case(
        "cascade.data",
        "unknown data set",
        ("--dataset=imagenet", "--data_dir={root}/data"),
        "Unknown data set",
    ),
    Case(
        "cascade.data", "zero preview clips", ("--num_examples=0", "--data_dir={root}/data"), ">= 1"
    ),
    Case("cascade.data", "data_dir is a file", ("--data_dir={root}/a_file",), "is a file"),
    Case(
        "cascade.data",
        "sound on a data set without sound",
        ("--dataset=moving_digits", "--sound", "--data_dir={root}/data"),
        "has no sound",
    ),
    Case(
        "cascade.data",
        "sound previews at another frame rate",
        ("--dataset=bouncing_shapes", "--sound", "--fps=12", "--data_dir={root}/data"),
        "timed for 8 frames per second",
    ),
    Case("cascade.quickstart", "--out is a file", ("--out={root}/a_file",), "is a file"),
    Case("cascade.quickstart", "zero training steps", ("--out={root}/qs", "--steps=0"), "--steps"),
    Case(
        "cascade.evaluation.fvd_sanity",
        "FVD of 1 clip",
        ("--num_videos=1", "--data_dir={root}/data"),
        ">= 2",
    ),
    Case(
        "cascade.evaluation.fvd_sanity",
        "clip too short for I3D",
        ("--clip_length=4", "--data_dir={root}/data"),
        ">= 9",
    ),
    Case(
        "experiments.vdm_ablations",
        "unknown preset",
        ("--config={configs}/experiments/vdm_ablations.py:huge", "--config.out={root}/x"),
        "unknown preset 'huge'",
    ),
    Case(
        "experiments.vdm_ablations",
        "unknown ablation",
        ("--config.ablations=cfg,gan", "--config.out={root}/x"),
        "'gan'",
    ),
    Case(
        "experiments.vdm_ablations",
        "zero seeds",
        ("--config.seeds=0", "--config.out={root}/x"),
        "config.seeds must be >= 1",
    ),
    Case(
        "experiments.cascade_vs_single_stage",
        "negative guidance",
        ("--config.guidance_scale=-1", "--config.out={root}/x"),
        "guidance_scale",
    ),
    Case(
        "experiments.long_video",
        "zero sampling seeds",
        ("--seeds=0", "--out={root}/x"),
        "--seeds=0: 0 is not a positive integer",
    ),
    # --condition=frames (conditional generation, cascade/evaluation/continuation.py): refused
    # before the workdir is looked at, so an untrained {root}/run is enough.
    Case(
        M,
        "more given frames than the window",
        _main("--mode=sample", "--condition=frames", "--given_frames=4"),
        "1 <= given_frames < 4",
    ),
    Case(
        M,
        "unreachable target length",
        _main("--mode=sample", "--condition=frames", "--given_frames=2", "--target_frames=5"),
        "--target_frames=5 cannot be reached",
    ),
    Case(
        M,
        "negative reconstruction weight",
        _main("--mode=sample", "--condition=frames", "--w_r=-1"),
        "--w_r=-1.0 must be >= 0",
    ),
    Case(
        M,
        "w_r with replacement (ignored)",
        _main("--mode=sample", "--condition=frames", "--method=replacement", "--w_r=3"),
        "would be ignored",
    ),
    Case(
        M,
        "condition frames while training",
        _main("--condition=frames"),
        "--mode=sample or --mode=evaluate",
    ),
    Case(
        M,
        "latent DiT given its whole window",
        (
            "--config={configs}/latent_dit.py:tiny",
            WD,
            "--mode=sample",
            "--condition=frames",
            "--given_frames=5",
        ),
        "given_frames < 5",
    ),
    Case(
        M,
        "causal DiT with no cached context",
        ("--config={configs}/causal_dit.py:tiny", WD, "--config.causal.window=0"),
        "config.causal.window must be >= 1",
    ),
    Case(
        M,
        "causal DiT config with bidirectional attention",
        ("--config={configs}/causal_dit.py:tiny", WD, "--config.model.causal_chunk=0"),
        "config.model.causal_chunk must be >= 1",
    ),
    Case(
        M,
        "joint audio-video stage on clips without sound",
        ("--config={configs}/av_dit.py:tiny", WD, "--config.data.sound=False"),
        "config.data.sound=False",
    ),
    Case(
        M,
        "unknown joint / two-stage audio-video mode",
        ("--config={configs}/av_dit.py:tiny", WD, "--config.av.mode=audio_first"),
        "config.av.mode = 'audio_first' is not allowed",
    ),
    Case(
        M,
        "condition frames on a VAE",
        ("--config={configs}/video_vae.py:tiny", WD, "--mode=sample", "--condition=frames"),
        "needs a keyframe stage",
    ),
    Case(
        M,
        "reconstruction guidance with the single-stage runner",
        (
            "--config={configs}/single_stage.py",
            WD,
            "--mode=sample",
            "--condition=frames",
            "--method=reconstruction",
        ),
        "--method=replacement (the default here) is the method",
    ),
    Case(
        M,
        "conditioning video of the wrong resolution",
        _main("--mode=sample", "--condition=frames", "--condition_video={root}/clip16.npy"),
        "expected [F, 8, 8, 1]",
    ),
    Case(
        M,
        "continue zero clips",
        _main("--mode=evaluate", "--condition=frames", "--config.train.num_samples=0"),
        "how many test clips",
    ),
    Case(
        M,
        "conditioning method with a runner config",
        ("--config={configs}/cascade.py", WD, "--mode=sample", "--method=replacement"),
        "only with --condition=frames",
    ),
)


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
