"""When the whole mesh stops dispatching, and until when. Pure: data in, data out.

A usage limit or a failed login hits every agent of the mesh alike, so one worker's bad
outcome pauses them all (`mesh:paused`, a JSON record with an expiry), instead of each
burning its retries and the quota. The daily budget works the same way: past the cap, no
new task starts until the next UTC midnight.
"""

import time
from datetime import datetime, timedelta, timezone

USAGE_LIMIT, AUTH, BUDGET = "usage_limit", "auth", "budget"
AUTH_PAUSE = 600.0  # a failed login: every task would fail the same way for a while
UNKNOWN_RESET = 300.0  # a usage limit without resetsAt: look again in 5 minutes
MIN_PAUSE = 1.0
SPEND_TTL = 2 * 86400  # mesh:spend:<day> lives two days


def day(now: float | None = None) -> str:
    """The UTC day a spend counter belongs to (YYYY-MM-DD)."""
    return datetime.fromtimestamp(time.time() if now is None else now,
                                  timezone.utc).strftime("%Y-%m-%d")


def next_utc_midnight(now: float) -> float:
    today = datetime.fromtimestamp(now, timezone.utc).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)
    return (today + timedelta(days=1)).timestamp()


def for_outcome(details: dict, now: float) -> tuple[float, str] | None:
    """(until, reason) when an agent's outcome should pause the mesh, else None."""
    kind = (details or {}).get("error")
    if kind == "rate_limit":
        resets = details.get("resets_at")
        until = float(resets) if isinstance(resets, (int, float)) and resets > now \
            else now + UNKNOWN_RESET
        return max(until, now + MIN_PAUSE), USAGE_LIMIT
    if kind == "auth":
        return now + AUTH_PAUSE, AUTH
    return None


def usage_limited(details: dict) -> bool:
    """Whether an agent's outcome was cut short by its usage limit: not the task's fault,
    and no attempt of it."""
    return (details or {}).get("error") == "rate_limit"


def for_budget(spent: float | None, cap: float | None, now: float) -> tuple[float, str] | None:
    """(next UTC midnight, 'budget') once today's spend has reached the cap."""
    if cap is None or spent is None or spent < cap:
        return None
    return next_utc_midnight(now), BUDGET


def record(until: float, reason: str, by: str | None, now: float, **extra) -> dict:
    """The value of mesh:paused."""
    from ..core import clock

    return {"reason": reason, "until": round(until, 3), "until_ts": clock.iso(until),
            "by": by, "since": clock.iso(now), **extra}


def daily_cap(settings) -> float | None:
    """config.toml `[budget] daily_usd` (settings: config.of(home)), or None (no cap)."""
    budget = settings.section("budget")
    value = budget.get("daily_usd", float)
    if value is not None and value <= 0:
        raise budget.error("daily_usd", f"must be a number > 0, not {value!r}")
    return value
