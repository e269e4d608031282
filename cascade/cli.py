"""What every command-line entry point shares: flag parsing that cannot escape as a traceback,
config loading with `--config.a.b=value` overrides, up-front validation, workdir checks,
multi-host initialisation, and one handler that turns a user mistake into one message.

    FLAGS = cli.new_flags()
    cli.define_config(FLAGS, "Stage config, e.g. configs/keyframes.py:tiny.")
    def body(args: cli.Args) -> None: ...
    if __name__ == "__main__":
        sys.exit(cli.entry(body, FLAGS, __doc__))

A user mistake (a config error, a bad flag, a missing checkpoint, an unwritable workdir, a
full disk, ...) prints `error: <what was wrong and what to do>` on stderr and exits with 2;
nothing is written before the check that fails. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from absl import flags

from cascade.configs import ConfigError

EXIT_USER_ERROR = 2
HELP_ARGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")
# OS errors that a user can fix (a path, a permission, space): reported, not a traceback.
USER_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTDIR: "a path component is a file, not a directory",
    errno.EISDIR: "is a directory",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "file name too long",
}


class UsageError(ValueError):
    """A command-line mistake that is not about the config (a flag, a path)."""


@dataclasses.dataclass
class Args:
    """The parsed command line: the flags and, for config entry points, the validated config."""

    flags: flags.FlagValues
    config: Any = None

    def __getattr__(self, name: str) -> Any:
        return self.flags[name].value


def new_flags() -> flags.FlagValues:
    """Flags of one entry point, kept apart from absl's global FLAGS (so entry points can be
    imported and run in one process, e.g. by tests)."""
    return flags.FlagValues()


def define_config(fv: flags.FlagValues, help_text: str) -> None:
    flags.DEFINE_string(
        "config",
        None,
        f"{help_text} Append :PRESET to pick a preset (configs/keyframes.py:tiny); override any "
        "field with --config.section.key=value (a key that does not exist or a value of the "
        "wrong type is refused before anything runs).",
        flag_values=fv,
    )


# -- user errors ---------------------------------------------------------------------------------
# Where each user-error type lives. They are looked up only in modules already imported (an
# exception cannot come from a module that never ran), so a mistake found while parsing never
# pays for importing TensorFlow or orbax just to be reported.
USER_ERROR_TYPES = (
    ("cascade.configs", "ConfigError"),
    ("cascade.cli", "UsageError"),
    ("cascade.stages.stage", "ShapeMismatchError"),
    ("cascade.training.checkpoints", "CheckpointError"),
    ("cascade.training.trainer", "NonFiniteLossError"),
    ("cascade.data.loading", "DatasetNotFoundError"),
)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the user asked for something that cannot run"."""
    found = []
    for module, name in USER_ERROR_TYPES:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None:
            found.append(cls)
    return tuple(found)


def describe_os_error(err: OSError) -> str | None:
    """One line for an OSError a user can fix, or None for one that is a bug."""
    if err.errno not in USER_ERRNOS:
        return None
    path = err.filename or ""
    what = err.strerror or USER_ERRNOS[err.errno]
    hint = {
        errno.ENOSPC: " Free some space (or point --workdir elsewhere) and rerun; training "
        "resumes from the last complete checkpoint.",
        errno.EDQUOT: " Free some space and rerun; training resumes from the last checkpoint.",
        errno.EROFS: " Point --workdir / data_dir at a writable directory.",
        errno.EACCES: " Point it at a directory you can write to.",
    }.get(err.errno, "")
    return f"cannot use {path}: {what}.{hint}" if path else f"{what}.{hint}"


# Errors that C++ layers (TFDS array_record, orbax/tensorstore) wrap in RuntimeError/ValueError
# keep the OS's words; these three are about the machine, never a bug in the code.
ENVIRONMENT_WORDS = (
    "No space left on device",
    "Read-only file system",
    "Disk quota exceeded",
)


def environment_error(err: BaseException) -> str | None:
    """The message for a user-fixable OS failure anywhere in `err`'s cause chain, else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and describe_os_error(err):
            return describe_os_error(err)
        text = str(err)
        for words in ENVIRONMENT_WORDS:
            if words in text:
                first = text.strip().splitlines()[0][:400]
                return (
                    f"{words.lower()}: {first} Free space or use a writable directory, then rerun."
                )
        err = err.__cause__ or err.__context__
    return None


def report(err: BaseException, message: str | None = None) -> int:
    """Print a user error as one message on stderr; returns the exit code."""
    text = message or str(err).strip().strip("'\"") or type(err).__name__
    print(f"error: {text}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def guarded(body: Callable[[], Any]) -> int:
    """Run `body`; a user error becomes one message and exit code 2, success 0."""
    try:
        body()
    except user_errors() as err:
        return report(err)
    except Exception as err:
        message = environment_error(err)
        if message is None:
            raise  # a bug: keep the traceback
        return report(err, message)
    return 0


# -- paths ------------------------------------------------------------------------------------
def check_writable_dir(path: str | None, what: str) -> Path:
    """`path` is (or can be created as) a local directory we can write to; creates nothing."""
    from cascade.config_checks import REMOTE

    if path is None or not str(path).strip():
        raise UsageError(f"{what} is empty: name a directory (e.g. {what}=/tmp/run).")
    if REMOTE.match(str(path)):
        raise UsageError(
            f"{what}={path}: remote paths are not supported; use a local or mounted directory "
            "(e.g. a gcsfuse mount of the bucket) and copy results from there."
        )
    target = Path(path).expanduser()
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == target else f"would be inside {probe}, which is a file"
        raise UsageError(f"{what}={path} {where}, not a directory.")
    try:  # a real write: os.access says yes to root on read-only mounts and sysfs
        fd, name = tempfile.mkstemp(dir=probe, prefix=".cascade-write-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        reason = err.strerror or USER_ERRNOS.get(err.errno, "not writable")
        raise UsageError(
            f"{what}={path}: cannot write in {probe} ({reason}). Point it at a directory you "
            "can write to."
        ) from None
    return target


def check_trained_workdir(path: str, what: str) -> Path:
    """A workdir named for reading must already hold checkpoints; nothing is created."""
    from cascade.config_checks import nonempty_path

    nonempty_path(path, what.removeprefix("config."))
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{what}={path} is a file, not a workdir.")
    checkpoints = target / "checkpoints"
    if not checkpoints.is_dir() or not any(p.name.isdigit() for p in checkpoints.iterdir()):
        raise ConfigError(
            f"No checkpoint found in {checkpoints} ({what}). Train this stage first "
            f"(python -m cascade.main --mode=train --workdir={path} --config=...) or point "
            f"{what} at the workdir that holds it."
        )
    return target


def check_data_dir(path: str, what: str = "config.data.data_dir") -> None:
    """A data_dir that exists must be a directory (embedded sets are built into it)."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{what}={path} is a file, not a directory.")


def check_config_paths(config, *, workdir: str | None, mode: str) -> None:
    """Every directory a config names, checked before anything is built or written."""
    if "data" in config and config.stage != "distill":
        check_data_dir(config.data.data_dir)
    if config.stage == "latent_dit" and mode == "train":
        check_trained_workdir(config.vae.workdir, "config.vae.workdir")
    if config.stage == "distill":
        check_trained_workdir(config.distill.teacher_workdir, "config.distill.teacher_workdir")
    if config.stage == "single_stage":
        check_trained_workdir(config.dit.workdir, "config.dit.workdir")
    if config.stage == "cascade":
        for name in config.order:
            check_trained_workdir(config.stages[name].workdir, f"config.stages.{name}.workdir")
    if workdir is not None:
        if mode in ("sample", "evaluate") and config.stage not in ("cascade", "single_stage"):
            check_trained_workdir(workdir, "--workdir")
        check_writable_dir(workdir, "--workdir")


# -- parsing ----------------------------------------------------------------------------------
def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str | None]]]:
    """(argv without them, [(dotted key, text or None)]) for every --config.<key>[=value]."""
    rest: list[str] = []
    overrides: list[tuple[str, str | None]] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--config."):
            key, eq, text = arg[len("--config.") :].partition("=")
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("-"):
                text, i = args[i + 1], i + 1
            overrides.append((key, text if (eq or text) else None))
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def load_config(spec: str | None, overrides: Sequence[tuple[str, str | None]]):
    """The config of `--config=FILE[:PRESET]` with overrides applied, validated."""
    from cascade import config_checks, config_overrides, configs

    if not spec:
        raise UsageError("--config is required, e.g. --config=configs/keyframes.py:tiny.")
    config = configs.load(spec)
    for key, text in overrides:
        if text is None:
            current = _lookup(config, key)
            if not isinstance(current, bool):
                raise ConfigError(f"--config.{key} needs a value: --config.{key}=VALUE.")
            text = "true"
        config_overrides.set_override(config, key, text)
    return config_checks.validate(config)


def _lookup(config, dotted: str) -> Any:
    """The current value at `dotted`; an unknown key raises set_override's did-you-mean error."""
    import ml_collections

    from cascade import config_overrides

    target = config
    for part in dotted.split("."):
        if not isinstance(target, ml_collections.ConfigDict) or part not in target:
            config_overrides.set_override(config, dotted, "")
        target = target[part]
    return target


def parse(
    fv: flags.FlagValues,
    argv: Sequence[str],
    *,
    required: Sequence[str] = (),
    config: bool = False,
) -> Args:
    """Parse argv into `fv` (and load the config); every mistake raises UsageError/ConfigError."""
    fv.unparse_flags()  # defaults again when called twice in one process (tests)
    rest, overrides = split_overrides(argv)
    if overrides and not config:
        raise UsageError(f"this command takes no config: unexpected --config.{overrides[0][0]}.")
    try:
        leftover = fv(rest)
    except flags.Error as err:
        raise UsageError(f"{err}. Pass --help for the flags.") from None
    if len(leftover) > 1:
        raise UsageError(f"unexpected arguments {leftover[1:]}. Pass --help for the flags.")
    for name in required:
        if fv[name].value in (None, ""):
            raise UsageError(f"--{name} is required. Pass --help for the flags.")
    args = Args(fv)
    if config:
        args.config = load_config(fv["config"].value, overrides)
    return args


def entry(
    body: Callable[[Args], Any],
    fv: flags.FlagValues,
    doc: str | None,
    argv: Sequence[str] | None = None,
    *,
    required: Sequence[str] = (),
    config: bool = False,
    distributed: bool = True,
) -> int:
    """Parse, validate and run `body(args)`; returns the process exit code (0, or 2 for a user
    mistake, reported in one line). `--help` prints the module doc and the flags."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in HELP_ARGS for a in argv[1:]):
        print((doc or "").strip() + "\n\nFlags:\n" + fv.get_help())
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _quiet_absl()

    def run() -> None:
        args = parse(fv, argv, required=required, config=config)
        if distributed:
            from cascade.training import parallel

            parallel.maybe_initialize_distributed()
        body(args)

    return guarded(run)


def _quiet_absl() -> None:
    """absl logs to stderr with a 'before flag parsing' warning unless its FLAGS are parsed;
    these entry points parse their own flags, so mark the global ones parsed (defaults)."""
    from absl import logging

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    logging.set_verbosity(logging.WARNING)  # orbax/tfds INFO lines drown the progress bars
