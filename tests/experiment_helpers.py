"""What the tiny end-to-end experiment tests share: their configs, and reading their CSVs."""

import csv
import math

from experiments import expconfig


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, list(rows[0].keys()) if rows else []


def finite(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def tiny(name, data_dir, tmp_path_factory):
    """configs/experiments/<name>.py:tiny on the session's data_dir, with its own fresh
    workdirs and output folder under pytest's temporary directory."""
    overrides = [
        ("out", str(tmp_path_factory.mktemp(name))),
        ("data_dir", data_dir),
        ("workdirs", str(tmp_path_factory.mktemp(f"{name}-workdirs"))),
    ]
    return expconfig.load(f"experiments/{name}:tiny", overrides)
