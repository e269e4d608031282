"""What a long command shows on the terminal: its progress bars and a closing summary. The rest
(the library's prints, absl / TFDS / orbax logging, Python warnings, and what C++ code such as
XLA writes straight to file descriptors 1 and 2) goes to a log file.

    with log_to_file(out / "quickstart.log"):
        ...  # tqdm bars (written to sys.stderr) still reach the terminal; print() does not
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path


@contextlib.contextmanager
def log_to_file(path: str | os.PathLike) -> Iterator[Path]:
    """Route stdout, logging, warnings and fds 1/2 to `path` (appended) for the block.

    `sys.stderr` is pointed at a duplicate of the terminal's stderr, so progress bars (tqdm
    writes to sys.stderr) and one-line error messages stay visible. Everything is restored on
    exit, also when the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved_fds = {fd: os.dup(fd) for fd in (1, 2)}
    log = open(path, "a", buffering=1)  # noqa: SIM115 (closed in finally)
    terminal = os.fdopen(os.dup(saved_fds[2]), "w", buffering=1)
    root = logging.getLogger()
    saved_logging = (list(root.handlers), root.level)
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved_streams = (sys.stdout, sys.stderr)
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout, sys.stderr = log, terminal
        root.handlers = [handler]
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        with _absl_to(log):
            yield path
    finally:
        logging.captureWarnings(False)
        root.handlers, level = saved_logging
        root.setLevel(level)
        sys.stdout, sys.stderr = saved_streams
        for fd, saved in saved_fds.items():
            os.dup2(saved, fd)
            os.close(saved)
        terminal.close()
        log.close()


@contextlib.contextmanager
def _absl_to(stream) -> Iterator[None]:
    """absl keeps its own handler (on the 'absl' logger once `absl.logging` is imported)."""
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler().python_handler
    saved = (handler.stream, absl_logging.get_verbosity())
    handler.setStream(stream)
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        yield
    finally:
        handler.setStream(saved[0])
        absl_logging.set_verbosity(saved[1])


def table(rows: Sequence[Sequence[object]], header: Sequence[str] | None = None) -> str:
    """Plain-text table, columns padded to their widest cell (first column left-aligned)."""
    cells = [[str(c) for c in row] for row in ([header] if header else []) + list(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
