"""The three limits an agent run can end on, and what each asks of the mesh. Pure.

They differ in whom they stop. A subscription's usage window (a rejected rate_limit_event
with its resetsAt) and a spend limit (out of credit, a spend cap reached) stop every agent
of the mesh alike: the mesh pauses, and the task goes back with its attempt undone. A
plain rate limit (an API key's 429, which the CLI already retried for minutes, or a
subscription's 429 that says "not your usage limit") stops only that request: the task
backs off on its own, with jitter so that workers do not come back in step, and the rest
of the mesh runs on. executors.stream tells them apart; the worker and queue.pause act.
"""

import random

# error kinds (a result's `error`, a mesh pause's `reason`)
USAGE_LIMIT = "usage_limit"  # the subscription's window is spent: pause until it resets
SPEND_LIMIT = "spend_limit"  # out of credit or over a spend cap: pause the mesh
RATE_LIMIT = "rate_limit"  # a plain 429: this task backs off, the mesh runs on
OVERLOADED = "overloaded"  # 529s the CLI gave up on: this task backs off too
PAUSES_MESH = (USAGE_LIMIT, SPEND_LIMIT)
BACKS_OFF = (RATE_LIMIT, OVERLOADED)

# result statuses
USAGE_LIMITED = "usage_limited"  # handed back, its attempt undone; the mesh is paused
RATE_LIMITED = "rate_limited"  # retried after a backoff (an attempt like any other)
FAILED = "failed"

BACKOFF_BASE, BACKOFF_CAP = 15.0, 300.0  # config.toml [retry] base, cap (its defaults)


def retry_backoff(settings) -> tuple[float, float]:
    """config.toml `[retry] base, cap` (settings: config.of(home)); 0 < base <= cap, or 78."""
    table = settings.section("retry")
    base, cap = table.value("base"), table.value("cap")
    if base <= 0:
        raise table.error("base", f"must be a number of seconds > 0, not {base!r}")
    if cap < base:
        raise table.error("cap", f"must be at least base ({base:g}), not {cap!r}")
    return base, cap


def status_of(error: str | None) -> str:
    """The status of a run that ended on error (not ok): the limits have their own, so
    that the event, the trace and the result all say the same."""
    if error in PAUSES_MESH:
        return USAGE_LIMITED
    if error == RATE_LIMIT:
        return RATE_LIMITED
    return FAILED


def pauses_mesh(error: str | None) -> bool:
    """Whether a run that ended on error hits every agent of the mesh alike."""
    return error in PAUSES_MESH


def backoff(error: str | None, attempt: int, base: float = BACKOFF_BASE,
            cap: float = BACKOFF_CAP, rand=random.random) -> float:
    """Seconds a task waits before its retry after attempt number `attempt` ended on error:
    0 for an error that waiting does not help; else base*2^(attempt-1), at most cap, of
    which a random half is kept (from half to all of it)."""
    if error not in BACKS_OFF or base <= 0:
        return 0.0
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return round(delay * (0.5 + rand() / 2), 3)
