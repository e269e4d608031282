"""Metric files: every JSON file the framework writes is strict JSON (a metric that could not
be computed is null, never NaN, which `json.dumps` writes by default and strict parsers
refuse), and averaging per-clip metrics where no clip has a reading gives NaN quietly."""

import json
import math
from pathlib import Path

import numpy as np

from cascade import json_io


def strict_load(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_missing_metrics_become_null_and_numpy_values_plain(tmp_path):
    report = {
        "identity_stability": float("nan"),
        "fvd": np.float32(352.5),
        "per_clip": np.array([1.0, np.inf, 0.5]),
        "steps": np.int64(400),
        "finite": np.bool_(True),
        "workdir": Path("/tmp/w"),
        3: ("a", None),
    }
    json_io.write_json(tmp_path / "m.json", report)
    back = strict_load((tmp_path / "m.json").read_text())
    assert back == {
        "identity_stability": None,
        "fvd": 352.5,
        "per_clip": [1.0, None, 0.5],
        "steps": 400,
        "finite": True,
        "workdir": "/tmp/w",
        "3": ["a", None],
    }
    assert strict_load(json_io.dumps({"x": math.nan}, indent=None)) == {"x": None}


def test_metrics_without_any_reading_average_to_nan_without_a_warning():
    import warnings

    from cascade.evaluation import aggregate

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Mean of empty slice" would fail here
        summary = aggregate.summarize(
            {"shape_constancy": np.full(4, np.nan), "teleports": np.array([0.0, 2.0, np.nan])}
        )
    assert math.isnan(summary["shape_constancy"]) and summary["teleports"] == 1.0
