"""Timestamps: ISO-8601 UTC with a trailing Z on the wire, epoch seconds for arithmetic."""

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
