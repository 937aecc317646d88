"""The worker's choice after a run, and the post-run step it shares with mesh-agent: pure,
tested without a process."""

import pytest

from meshtools.executors.stream import AUTH, BUDGET, MAX_TURNS
from meshtools.core import clock
from meshtools.queue import limits, pause
from meshtools.queue.limits import OVERLOADED, RATE_LIMIT, SPEND_LIMIT, USAGE_LIMIT
from meshtools.queue.worker import (DEAD_LETTER, FINISH, HAND_BACK, OVER_BUDGET, RETRY,
                                    decide_outcome)

from .helpers import redis_of

pytestmark = pytest.mark.fast  # pure logic, in seconds: `make test-fast`


@pytest.mark.parametrize("status, error, attempt, limit, expected", [
    ("ok", None, 1, 3, FINISH),
    ("ok", None, 3, 3, FINISH),  # the last attempt succeeded
    ("failed", None, 1, 3, RETRY),
    ("timeout", None, 2, 3, RETRY),
    ("failed", MAX_TURNS, 1, 3, RETRY),
    ("failed", AUTH, 1, 3, RETRY),  # a failed login pauses the mesh, the task is retried
    ("failed", None, 3, 3, DEAD_LETTER),
    ("timeout", None, 4, 3, DEAD_LETTER),
    ("usage_limited", USAGE_LIMIT, 3, 3, HAND_BACK),  # not the task's fault, even last
    ("ok", USAGE_LIMIT, 1, 3, HAND_BACK),
    ("usage_limited", SPEND_LIMIT, 1, 3, HAND_BACK),
    ("rate_limited", RATE_LIMIT, 1, 3, RETRY),  # backs off alone (issue 17 item 5)
    ("rate_limited", RATE_LIMIT, 3, 3, DEAD_LETTER),
    ("failed", BUDGET, 1, 3, OVER_BUDGET),  # a retry would cost as much
])
def test_decide_outcome(status, error, attempt, limit, expected):
    assert decide_outcome(status, error, attempt, limit) == expected


@pytest.mark.parametrize("error, status, pauses", [
    (USAGE_LIMIT, "usage_limited", True), (SPEND_LIMIT, "usage_limited", True),
    (RATE_LIMIT, "rate_limited", False), (OVERLOADED, "failed", False),
    (AUTH, "failed", False), (None, "failed", False)])
def test_each_limit_has_its_status_and_only_two_pause_the_mesh(error, status, pauses):
    assert limits.status_of(error) == status
    assert limits.pauses_mesh(error) is pauses
    assert (pause.for_outcome({"error": error}, 1000.0) is not None) is (pauses or
                                                                         error == AUTH)


def test_a_plain_rate_limit_never_pauses_the_mesh():
    """An API key's 429 ended `error: rate_limit`, and the mesh paused 300 s with
    resets_at null (issue 17 item 5)."""
    assert pause.for_outcome({"error": RATE_LIMIT}, 1000.0) is None
    assert pause.for_outcome({"error": RATE_LIMIT, "resets_at": 5000}, 1000.0) is None


def test_the_mesh_pauses_until_the_limit_lifts_or_for_a_while():
    now = 1000.0
    assert pause.for_outcome({"error": USAGE_LIMIT, "resets_at": 4600}, now) == (
        4600.0, USAGE_LIMIT)
    assert pause.for_outcome({"error": USAGE_LIMIT}, now) == (now + pause.UNKNOWN_RESET,
                                                              USAGE_LIMIT)
    assert pause.for_outcome({"error": SPEND_LIMIT, "resets_at": 9000}, now) == (
        9000.0, SPEND_LIMIT)
    assert pause.for_outcome({"error": SPEND_LIMIT}, now) == (now + pause.SPEND_PAUSE,
                                                              SPEND_LIMIT)


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_backoff_grows_per_attempt_with_jitter_up_to_its_cap(rand):
    def delay(attempt, error=RATE_LIMIT):
        return limits.backoff(error, attempt, 10.0, 60.0, rand=lambda: rand)

    full = [10.0, 20.0, 40.0, 60.0, 60.0]
    for attempt, most in enumerate(full, start=1):
        assert most / 2 <= delay(attempt) <= most
    assert delay(1) < delay(2) < delay(3)
    assert delay(1, OVERLOADED) == delay(1)
    assert delay(1, None) == delay(1, AUTH) == delay(1, USAGE_LIMIT) == 0.0


def test_backoff_spreads_workers_that_retry_together():
    delays = {limits.backoff(RATE_LIMIT, 2) for _ in range(20)}
    assert len(delays) > 1  # jitter: not all in step
    assert all(limits.BACKOFF_BASE <= d <= 2 * limits.BACKOFF_BASE for d in delays)


def test_after_run_without_redis_pauses_nothing():
    assert pause.after_run(None, {"error": USAGE_LIMIT}, 1.0, "w") == []
    assert pause.after_run(None, {"error": BUDGET, "cost_usd": 9.0}, 1.0, "w") == []


def test_after_run_accounts_and_pauses_behind_the_guard(mesh_home):
    """The Redis part runs inside guard (the worker's _survive, mesh-agent's best effort)."""
    from meshtools.queue.names import Names

    pauses = pause.Pauses(redis_of(mesh_home), Names())
    guarded = []
    held = pause.after_run(pauses, {"error": USAGE_LIMIT, "cost_usd": 0.5}, None, "w",
                           guard=lambda op: guarded.append(op) or op(), task="t")
    assert len(guarded) == 1
    assert [(p["reason"], p["by"], p["task"]) for p in held] == [(USAGE_LIMIT, "w", "t")]
    assert pauses.paused() == held[0]
    assert pauses.spent(pause.day(clock.calendar_now())) == 0.5
