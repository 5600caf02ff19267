"""CSV tables of the benchmark's reports (one formatting of numbers for every table)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["rows_to_csv"]

def rows_to_csv(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str:
    """CSV text of ``rows`` with the columns ``fields`` (floats as ``%.6g``, missing values empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _fmt(r.get(k, "")) for k in fields})
    return buf.getvalue()


def _fmt(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return "nan" if math.isnan(float(v)) else f"{float(v):.6g}"
    if isinstance(v, np.integer):
        return int(v)
    return v
