"""Running a notebook of notebooks/ in a real Jupyter kernel (nbclient + ipykernel), with its
`parameters` cell overridden the way papermill does it: a cell injected right after it."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
KERNEL = "cascade-test"


def install_kernel(jupyter_dir: Path) -> str:
    """A kernelspec for this interpreter (the project's venv) under jupyter_dir, found first
    through JUPYTER_PATH: the kernel imports what the tests import, whatever other Python
    kernels (a user's `python3`) are installed."""
    spec = jupyter_dir / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "cascade (tests)", "language": "python"})
    )
    return KERNEL


def with_parameters(nb: nbformat.NotebookNode, parameters: dict[str, Any]) -> int:
    """Inserts `NAME = value` lines after the one cell tagged `parameters`; returns its index."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    known = nb.cells[tagged[0]].source
    unknown = [name for name in parameters if f"\n{name} =" not in f"\n{known}"]
    assert not unknown, f"not in the parameters cell: {unknown}"
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(tagged[0] + 1, cell)
    return tagged[0]


def run_notebook(
    name: str, parameters: dict[str, Any], tmp_path: Path, monkeypatch: Any, *, timeout: int = 900
) -> nbformat.NotebookNode:
    """Executes notebooks/<name> top to bottom in a fresh kernel started in the repository
    root; a failing cell raises nbclient's CellExecutionError (naming the cell). Returns the
    executed notebook (outputs filled in), also written to tmp_path/<name>."""
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    stored = [c for c in nb.cells if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stored, f"{name} is stored with outputs: clear them before committing"
    with_parameters(nb, parameters)
    kernel = install_kernel(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # One CPU device, as on a researcher's laptop (the suite's 8 simulated ones only slow
    # compilation down); the XLA compile cache set up by conftest.py is inherited.
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    monkeypatch.setenv("XLA_FLAGS", flags.strip())
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(
        nb, kernel_name=kernel, timeout=timeout, resources={"metadata": {"path": str(REPO)}}
    )
    try:
        client.execute()
    finally:  # what ran, outputs and all, for a look after a failure (nbclient fills nb in)
        nbformat.write(nb, tmp_path / name)
    return nb


def displayed(nb: nbformat.NotebookNode) -> Counter:
    """How many display outputs of each image type the executed notebook shows."""
    counts: Counter = Counter()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type in ("display_data", "execute_result"):
                counts.update(m for m in out.data if m.startswith("image/"))
    return counts


def text_output(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed (stdout streams and text results), in cell order."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                parts.append(out.text)
            elif out.output_type == "execute_result" and "text/plain" in out.data:
                parts.append(out.data["text/plain"])
    return "".join(parts)
