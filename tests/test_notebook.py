"""The walkthrough notebook, every code cell in order (a file of its own, so a parallel test
worker runs it beside the experiment tests rather than after them)."""

import json
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    """Every code cell in order, in one namespace, from the repo root, writing under tmp_path."""
    # Import what the notebook imports first: flax/treescope probe for IPython at import time
    # and must not find the stand-in below (IPython is not a dependency of this project).
    import cascade.evaluation.evaluate  # noqa: F401
    import cascade.sampling.runners  # noqa: F401
    import cascade.training.trained  # noqa: F401
    import cascade.training.trainer  # noqa: F401

    shown = []
    display_module = types.ModuleType("IPython.display")

    class Image:  # what the notebook displays: files it has just written
        def __init__(self, filename):
            assert Path(filename).stat().st_size > 0, filename
            self.filename = filename

    display_module.Image = Image
    display_module.display = lambda *objs: shown.extend(o.filename for o in objs)
    ipython = types.ModuleType("IPython")
    ipython.display = display_module
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_module)
    monkeypatch.setenv("CASCADE_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.chdir(REPO)

    namespace = {"__name__": "__main__"}
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    for i, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"walkthrough.ipynb cell {i}", "exec"), namespace)

    names = [Path(p).name for p in shown]
    assert names[:3] == ["clip.gif", "views.png", "keyframe_samples.png"]
    assert {"stages_large.gif", "final_large.png"} <= set(names)
    assert all(Path(p).is_relative_to(tmp_path) for p in shown)
    assert namespace["samples"].shape == (4, 4, 8, 8, 1)
    assert namespace["report"]["shapes"] == {
        "keyframes": [4, 8, 8, 1],
        "temporal_sr": [8, 8, 8, 1],
        "spatial_sr": [8, 16, 16, 1],
    }
