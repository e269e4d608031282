"""Strict JSON for every file the framework writes (metrics, reports, timings).

Python's `json` writes NaN and Infinity, which are not JSON: a metric that could not be
computed (no digit read, no impact found) would make the file unreadable to strict parsers
(`jq`, browsers, pandas with the C engine). Here they become null, numpy values become Python
ones, and paths become strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Nested mappings/sequences of numpy and Python values -> plain JSON values (NaN/inf:
    None; anything else unknown: its str)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, np.generic):  # other numpy scalars (e.g. complex, str_)
        return to_jsonable(value.item())
    return str(value)


def dumps(value: Any, indent: int | None = 2) -> str:
    """`value` as strict JSON text (through `to_jsonable`; NaN never written)."""
    return json.dumps(to_jsonable(value), indent=indent, allow_nan=False)


def write_json(path: str | Path, value: Any) -> None:
    """`value` as indented strict JSON at `path`."""
    Path(path).write_text(dumps(value))
