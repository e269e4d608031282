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


def tiny(name, shared, out):
    """configs/experiments/<name>.py:tiny writing to `out`, on the `shared` data_dir/workdirs."""
    overrides = [("out", str(out)), *shared.items()]
    return expconfig.load(f"experiments/{name}:tiny", overrides)
