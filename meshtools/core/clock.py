"""Timestamps: ISO-8601 UTC with a trailing Z on the wire, epoch seconds for arithmetic."""

import os
import time
from datetime import datetime, timezone


def iso(epoch: float | None = None) -> str:
    if epoch is None:
        epoch = time.time()
    dt = datetime.fromtimestamp(epoch, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def now() -> float:
    return time.time()


def calendar_now() -> float:
    """The time by which the mesh's dates are reckoned (the daily budget's UTC day).
    $MESH_NOW (epoch seconds, or ISO-8601 UTC) fixes it, so a test picks its day instead
    of racing UTC midnight; durations and liveness always use the real clock (now)."""
    fixed = os.environ.get("MESH_NOW")
    if not fixed:
        return time.time()
    try:
        return float(fixed)
    except ValueError:
        pass
    try:
        return parse_iso(fixed)
    except ValueError:
        from .errors import ConfigError

        raise ConfigError(f"MESH_NOW={fixed!r} is no time (epoch seconds or ISO-8601)") from None
