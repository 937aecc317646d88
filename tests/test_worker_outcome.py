"""The worker's choice after a run, and the post-run step it shares with mesh-agent: pure,
tested without a process."""

import pytest

from meshtools.executors.stream import AUTH, BUDGET, MAX_TURNS, RATE_LIMIT
from meshtools.core import clock
from meshtools.queue import pause
from meshtools.queue.worker import (DEAD_LETTER, FINISH, HAND_BACK, OVER_BUDGET, RETRY,
                                    decide_outcome)

from .helpers import redis_of


@pytest.mark.parametrize("status, error, attempt, limit, expected", [
    ("ok", None, 1, 3, FINISH),
    ("ok", None, 3, 3, FINISH),  # the last attempt succeeded
    ("failed", None, 1, 3, RETRY),
    ("timeout", None, 2, 3, RETRY),
    ("failed", MAX_TURNS, 1, 3, RETRY),
    ("failed", AUTH, 1, 3, RETRY),  # a failed login pauses the mesh, the task is retried
    ("failed", None, 3, 3, DEAD_LETTER),
    ("timeout", None, 4, 3, DEAD_LETTER),
    ("failed", RATE_LIMIT, 3, 3, HAND_BACK),  # not the task's fault, even on its last try
    ("ok", RATE_LIMIT, 1, 3, HAND_BACK),
    ("failed", BUDGET, 1, 3, OVER_BUDGET),  # a retry would cost as much
])
def test_decide_outcome(status, error, attempt, limit, expected):
    assert decide_outcome(status, error, attempt, limit) == expected


def test_after_run_without_redis_marks_a_usage_limit_only():
    result = {"status": "failed"}
    assert pause.after_run(None, result, {"error": RATE_LIMIT}, 1.0, "w") == []
    assert result["status"] == pause.USAGE_LIMITED
    result = {"status": "failed"}
    assert pause.after_run(None, result, {"error": BUDGET, "cost_usd": 9.0}, 1.0, "w") == []
    assert result["status"] == "failed"


def test_after_run_accounts_and_pauses_behind_the_guard(mesh_home):
    """The Redis part runs inside guard (the worker's _survive, mesh-agent's best effort)."""
    from meshtools.queue.names import Names

    pauses = pause.Pauses(redis_of(mesh_home), Names())
    guarded = []
    result = {"status": "failed"}
    held = pause.after_run(pauses, result, {"error": RATE_LIMIT, "cost_usd": 0.5}, None, "w",
                           guard=lambda op: guarded.append(op) or op(), task="t")
    assert len(guarded) == 1 and result["status"] == pause.USAGE_LIMITED
    assert [(p["reason"], p["by"], p["task"]) for p in held] == [(pause.USAGE_LIMIT, "w", "t")]
    assert pauses.paused() == held[0]
    assert pauses.spent(pause.day(clock.calendar_now())) == 0.5
