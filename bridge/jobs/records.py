"""Status records (the content of ``jobs/<id>/status.json``) as the service keeps them: their JSON text, the check
of a record read back from disk, and the record that stands in for an unreadable one. Pure: no lock, no I/O."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from bridge.jobs.protocol import STATES, VERSION

STOPPED_MSG = "the engine stopped during this job"


def dumps(st: dict[str, Any]) -> str:
    return json.dumps(st, ensure_ascii=False, allow_nan=False)


def null_non_finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None, in place for dicts and lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = null_non_finite(v)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            obj[i] = null_non_finite(v)
    return obj


def _real(x: object) -> bool:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def status_ok(jid: str, st: object) -> bool:
    """Whether a status read from disk has the shape the daemon relies on (a hostile or damaged file may not)."""
    if not isinstance(st, dict) or st.get("id") != jid or st.get("state") not in STATES:
        return False
    if not all(_real(st.get(k)) for k in ("created", "updated", "progress")):
        return False
    if not isinstance(st.get("stage"), str) or not isinstance(st.get("takes", []), list):
        return False
    for k in ("created", "updated", "progress"):
        st[k] = float(st[k])
    return True


def placeholder(jid: str, error: str) -> dict[str, Any]:
    """A failed status for a job whose own record cannot be used."""
    now = time.time()
    return {
        "version": VERSION,
        "id": jid,
        "label": None,
        "state": "failed",
        "stage": "failed",
        "progress": 0.0,
        "error": error,
        "priority": "interactive",
        "prompt": None,
        "mode": None,
        "model": None,
        "seed": None,
        "source": {"path": None, "start": 0.0, "length": None},
        "sample_rate": None,
        "channels": None,
        "frames": None,
        "takes": [],
        "best": None,
        "created": now,
        "updated": now,
    }
