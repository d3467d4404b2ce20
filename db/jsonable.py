"""JSON-safe values: the one conversion every stored record and every ``--json`` output uses.

NaN and infinities become ``null`` (JSON has neither), numpy scalars become Python
numbers, datetimes become ISO strings, dataclass instances become mappings of their
fields, and mappings and sequences are converted deeply.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` with every part converted to something ``json.dumps`` writes as standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. a decision's predictions
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return jsonable(value.item())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
