"""Every JSON file the framework writes is strict JSON: a metric that could not be computed is
null, never NaN (which `json.dumps` writes by default and strict parsers refuse)."""

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
