"""notebooks/01_data_and_views.ipynb in a real kernel: the data sets, their ground truth drawn
over the frames, and each stage's training pair from one clip (no training: seconds)."""

import ast

import nbformat
import pytest
from notebook_kernel import REPO, displayed, run_notebook, text_output


@pytest.mark.slow
def test_data_and_views_notebook(data_dir, tmp_path, monkeypatch):
    params = {"WORKDIR": str(tmp_path / "work"), "DATA_DIR": data_dir, "NUM_CLIPS": 2}
    params.update(SHAPES_FRAMES=8, SHAPES_RESOLUTION=16, SCALE=4)
    nb = run_notebook("01_data_and_views.ipynb", params, tmp_path, monkeypatch)
    out = tmp_path / "work" / "01_data_and_views"
    written = {p.name for p in out.iterdir() if p.stat().st_size > 0}
    assert {
        "digits.gif",
        "digits_frames.png",
        "digits_positions.png",
        "shapes.gif",
        "shapes_states.gif",
        "shapes_states.png",
        "training_pairs.png",
        "training_pairs.gif",
        "views.png",
    } <= written
    shown = displayed(nb)
    # 5 PNGs written and shown + the trajectory plot (matplotlib, inline); 4 animations.
    assert shown["image/png"] == 6 and shown["image/gif"] == 4, shown
    printed = text_output(nb)
    assert "rows: ['keyframes', 'temporal_sr', 'spatial_sr', 'video_vae']" in printed
    assert "share of object-frames hidden behind the occluder" in printed


NOTEBOOKS = ("01_data_and_views.ipynb", "02_cascade.ipynb", "03_latent_dit_vs_cascade.ipynb")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_clean(name):
    """Valid nbformat 4, no outputs, sizes in one leading `parameters` cell of plain
    assignments, valid Python, and only the package's public names imported."""
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert tagged == code[:1], "the first code cell, and only it, is tagged 'parameters'"
    params = ast.parse(tagged[0].source).body
    assert params and all(isinstance(s, ast.Assign) for s in params)
    for cell in code:
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cascade"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private and "._" not in node.module, (node.module, private)
