"""The anchor's decisions as pure functions of data."""

import pytest

from meshtools.agents import anchor
from meshtools.core import roles

pytestmark = pytest.mark.fast  # pure logic, in seconds: `make test-fast`

ROLES = roles.load()


def test_ok_work_of_a_landing_role_is_landed():
    result = {"id": "t1", "status": "ok", "role": "builder"}
    work = {"base": "a" * 40, "head": "b" * 40}
    assert anchor.decide_landing(result, ROLES["builder"], work, 1).action == "land"


def test_ok_without_commits_or_from_a_read_only_role_is_just_done():
    result = {"id": "t1", "status": "ok"}
    same = {"base": "a" * 40, "head": "a" * 40}
    assert anchor.decide_landing(result, ROLES["builder"], same, 1).action == "done"
    assert anchor.decide_landing(result, ROLES["builder"], None, 1).action == "done"
    research = anchor.decide_landing(result, ROLES["research"], {"base": "a", "head": "b"}, 1)
    assert research.action == "done" and "does not land" in research.reason


def test_failures_are_handed_back_until_the_limit():
    failed = {"id": "t1", "status": "failed", "exit_code": 2, "dead_letter": True,
              "reason": "failed on attempt 3 of 3"}
    assert anchor.decide_landing(failed, ROLES["builder"], None, 1) == \
        anchor.Decision("hand_back", "failed on attempt 3 of 3")
    again = dict(failed, id="t1~1", handback=1, parent="t1")
    assert anchor.decide_landing(again, ROLES["builder"], None, 1).action == "give_up"
    assert anchor.decide_landing(again, ROLES["builder"], None, 2).action == "hand_back"


def test_a_handed_back_task_carries_the_context_and_a_new_id():
    result = {"id": "t1", "status": "failed", "prompt": "fix the parser", "role": "builder"}
    task = anchor.handback_task(result, "conflict in README.md", "Conflicting files: README.md.")
    assert task["id"] == "t1~1" and task["parent"] == "t1" and task["handback"] == 1
    assert task["prompt"].startswith("fix the parser") and "README.md" in task["prompt"]
    second = anchor.handback_task(dict(result, id="t1~1", parent="t1", handback=1), "x", "y")
    assert second["id"] == "t1~2" and second["parent"] == "t1"


def test_hand_back_ids_pass_the_one_task_id_rule():
    from meshtools.core.errors import BadInput
    from meshtools.core.ids import validate_task_id
    from meshtools.queue.tasks import normalise

    result = {"id": "feat-3", "status": "failed", "prompt": "build it", "role": "builder"}
    task = anchor.handback_task(result, "conflict", "")
    assert validate_task_id(task["id"]) == "feat-3~1" and normalise(task) == task
    too_long = dict(result, id="f" * 127)  # its hand-back's id would be 129 characters
    with pytest.raises(BadInput, match="invalid task id"):
        anchor.handback_task(too_long, "conflict", "")


def test_an_entry_no_worker_could_run_is_not_handed_back():
    invalid = {"id": "entry-1-0", "status": "invalid", "reason": "entry 1-0: malformed JSON"}
    assert anchor.decide_landing(invalid, ROLES["builder"], None, 1) == \
        anchor.Decision("give_up", "entry 1-0: malformed JSON")


def test_standing_tasks_are_named_by_their_period():
    day = 86400
    due = anchor.standing_tasks(ROLES, 10 * day + 5)
    by_role = {task["role"]: (task, queue) for task, queue in due}
    assert set(by_role) == {r.name for r in ROLES.values() if r.every}
    assert by_role["groomer"][0]["id"] == "standing-groomer-10"
    assert by_role["groomer"][1] == "groomer"
    later_same_day = anchor.standing_tasks(ROLES, 10 * day + 3600)
    assert {t["id"] for t, _ in due} & {t["id"] for t, _ in later_same_day} >= \
        {"standing-groomer-10", "standing-security-10"}
    next_day = {t["id"] for t, _ in anchor.standing_tasks(ROLES, 11 * day)}
    assert "standing-groomer-11" in next_day


def test_peer_changes_report_each_turn_for_the_worse_once():
    sessions = [{"id": "b1", "state": "alive"}, {"id": "b2", "state": "stale"},
                {"id": "m1", "state": "alive", "phase": "FATAL"}]
    states, changes = anchor.peer_changes({}, sessions)
    assert [(r["id"], new) for r, _, new in changes] == [("b2", "stale"), ("m1", "FATAL")]
    sessions[1] = {"id": "b2", "state": "dead"}
    states, changes = anchor.peer_changes(states, sessions)
    assert [(r["id"], old, new) for r, old, new in changes] == [("b2", "stale", "dead")]
    assert anchor.peer_changes(states, sessions)[1] == []


def test_a_live_agent_in_one_working_phase_too_long_is_stuck():
    busy = {"id": "b1", "state": "alive", "phase": "tool Bash", "phase_age": 100.0}
    idle = {"id": "b2", "state": "alive", "phase": "done", "phase_age": 99999.0}
    states, changes = anchor.peer_changes({}, [busy, idle], stuck_after=600)
    assert changes == [] and states == {"b1": "alive", "b2": "alive"}
    stuck = dict(busy, phase_age=700.0)
    states, changes = anchor.peer_changes(states, [stuck, idle], stuck_after=600)
    assert [(r["id"], old, new) for r, old, new in changes] == [("b1", "alive", "stuck")]
    assert anchor.peer_changes(states, [stuck, idle], stuck_after=600)[1] == []


def test_a_fatal_peer_waits_out_the_cooldown_then_is_respawned_a_bounded_number_of_times():
    spawned = {"respawn": ["mesh-spawn", "builder", "--id", "builder-1", "--detach"]}
    fatal = {"id": "builder-1", "phase": "FATAL", "phase_age": 10.0}
    assert anchor.fatal_retry(fatal, spawned, 300, 3) is None  # cooling down
    assert anchor.fatal_retry(dict(fatal, phase_age=300), spawned, 300, 3) == "respawn"
    twice = dict(spawned, fatal_respawns=2)
    assert anchor.fatal_retry(dict(fatal, phase_age=300), twice, 300, 3) == "respawn"
    thrice = dict(spawned, fatal_respawns=3)
    assert anchor.fatal_retry(fatal, thrice, 300, 3) == "give_up"  # no need to wait for that
    assert anchor.fatal_retry(fatal, dict(thrice, fatal_given_up=True), 300, 3) is None
    assert anchor.fatal_retry(dict(fatal, phase_age=300), None, 300, 3) is None  # foreground
    assert anchor.fatal_retry(dict(fatal, phase_age=300), spawned, 300, 0) == "give_up"


def test_fatal_settings_come_from_config_and_bad_ones_are_refused():
    import pytest

    from meshtools.core.config import Section
    from meshtools.core.errors import ConfigError

    assert anchor.fatal_settings(Section({}, names=("anchor",))) == (300.0, 3)
    assert anchor.fatal_settings(Section({"fatal_cooldown": "10m", "fatal_respawns": 0},
                                         names=("anchor",))) == (600.0, 0)
    for bad in ({"fatal_cooldown": "soon"}, {"fatal_respawns": -1}, {"fatal_respawns": "3"}):
        with pytest.raises(ConfigError):
            anchor.fatal_settings(Section(bad, names=("anchor",)))


def test_each_decision_reads_as_one_line():
    def line(event, **fields):
        return anchor.describe({"ts": "t", "event": f"anchor.{event}", **fields})

    assert line("landed", task="t1", role="builder", reason="picked") == \
        "landed t1 (builder): picked"
    assert line("handed_back", task="t1", role="builder", new_task="t1~1",
                reason="it conflicts") == "handed back t1 (builder) as t1~1: it conflicts"
    assert line("scheduled", task="standing-memory-7", queue="memory") == \
        "scheduled standing-memory-7 on memory"
    assert line("respawned", session="b1", role="builder", attempt=2, of=3) == \
        "respawned b1 (builder) after FATAL (attempt 2 of 3)"
    assert line("peer_dead", session="r1", role="research") == "peer r1 (research) is dead"
    assert line("fatal_given_up", session="b1", reason="FATAL again after 3 respawn(s)") == \
        "gave up on FATAL b1: FATAL again after 3 respawn(s)"
