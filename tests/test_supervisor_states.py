"""The supervisor's states (issue 9): the transition table and the backoff schedule, pure;
then change_state on a Supervisor that runs no process."""

import json
import subprocess
import sys

import pytest

from meshtools.agents.supervisor import (FATAL, RESTART, BadTransition, RestartPolicy, State,
                                         Supervisor, decide_restart, states)
from meshtools.core.home import MeshHome

pytestmark = pytest.mark.fast  # pure logic, in seconds: `make test-fast`

S = State


def reachable(start: State) -> set[State]:
    seen, todo = {start}, [start]
    while todo:
        for new in states.TRANSITIONS[todo.pop()] - seen:
            seen.add(new)
            todo.append(new)
    return seen


# --- the table ---------------------------------------------------------------------------

def test_the_table_names_every_state_and_only_states():
    assert set(states.TRANSITIONS) == set(State)
    assert all(targets <= set(State) for targets in states.TRANSITIONS.values())
    assert set(states.RECORDED) | set(states.PHASES) | set(states.EVENTS) <= set(State)


def test_every_state_is_reached_from_starting_and_can_end():
    assert reachable(S.STARTING) == set(State)
    assert all(reachable(s) & states.FINAL_STATES for s in State)  # no trap: each can end
    assert all(not states.TRANSITIONS[s] for s in states.FINAL_STATES)  # and end is the end


@pytest.mark.parametrize("old, new", [
    (S.STARTING, S.RUNNING), (S.STARTING, S.EXITED), (S.STARTING, S.STOPPED),
    (S.RUNNING, S.STOPPING), (S.RUNNING, S.RESTARTING), (S.RUNNING, S.EXITED),
    (S.RESTARTING, S.RESTARTING), (S.RESTARTING, S.STOPPING), (S.STOPPING, S.EXITED),
    (S.EXITED, S.BACKOFF), (S.EXITED, S.STARTING), (S.EXITED, S.FATAL), (S.EXITED, S.STOPPED),
    (S.BACKOFF, S.STARTING), (S.BACKOFF, S.STOPPED),
])
def test_allowed_changes(old, new):
    assert states.check(old, new) is new


@pytest.mark.parametrize("old, new", [
    (S.STOPPING, S.RESTARTING),  # a stop is never turned back into a restart
    (S.STOPPING, S.STOPPING),  # a second stop is passed on, not a change
    (S.RUNNING, S.RUNNING), (S.RUNNING, S.BACKOFF), (S.RUNNING, S.FATAL),
    (S.BACKOFF, S.RUNNING),  # a child is started from STARTING only
    (S.STARTING, S.STOPPING),  # no child yet: nothing to stop
    (S.FATAL, S.STARTING), (S.STOPPED, S.STARTING),
])
def test_refused_changes(old, new):
    with pytest.raises(BadTransition, match=f"from {old.name} to {new.name}"):
        states.check(old, new)


def test_a_restart_is_announced_once_when_decided():
    assert states.event(S.EXITED, S.STARTING) == "restart"  # a control's: no backoff
    assert states.event(S.EXITED, S.BACKOFF) == "restart"
    assert states.event(S.BACKOFF, S.STARTING) is None  # the backoff is over: said already
    assert [states.event(S.STARTING, s) for s in (S.RUNNING, S.EXITED, S.STOPPED)] == \
        ["started", "exited", "stopped"]
    assert states.event(S.RUNNING, S.STOPPING) is None


def test_what_a_state_records():
    assert states.phase(S.BACKOFF, {"delay": 4.0}) == "backoff 4s"
    assert states.phase(S.RUNNING, {}) == "running" and states.phase(S.FATAL, {}) == "FATAL"
    assert states.phase(S.STOPPING, {"signal": 15}) is None  # the phase stays "running"
    assert states.RECORDED[S.STOPPING] == "stopping"
    assert S.EXITED not in states.RECORDED and S.STOPPED not in states.RECORDED


# --- the backoff schedule ----------------------------------------------------------------

def schedule(policy: RestartPolicy, uptimes: list[float]) -> list:
    """(action, n, delay) after each exit (code 1) of runs that lasted `uptimes`."""
    n, out = 0, []
    for uptime in uptimes:
        d = decide_restart(policy, n, uptime, 1)
        out.append((d.action, d.n, d.delay))
        n = d.n
    return out


def test_the_default_schedule():
    assert schedule(RestartPolicy(), [0.1] * 5) == [
        (RESTART, 1, 1.0), (RESTART, 2, 4.0), (RESTART, 3, 9.0), (RESTART, 4, 16.0),
        (FATAL, 5, 0.0)]


def test_a_stable_run_starts_the_schedule_over():
    policy = RestartPolicy(base=2, cap=10, min_uptime=5, max_rapid_failures=3)
    assert schedule(policy, [1, 1, 5, 1, 1, 1]) == [
        (RESTART, 1, 2), (RESTART, 2, 8), (RESTART, 0, 0), (RESTART, 1, 2), (RESTART, 2, 8),
        (FATAL, 3, 0.0)]


# --- change_state, on a supervisor that runs nothing -------------------------------------

@pytest.fixture
def supervisor(mesh_home):
    home = MeshHome(str(mesh_home))
    home.ensure("spawns")
    return Supervisor(home, ["true"], session=None)


def test_change_state_refuses_a_change_the_table_does_not_list(supervisor, mesh_home):
    with pytest.raises(BadTransition):
        supervisor.change_state(S.BACKOFF, delay=1.0)
    assert supervisor.state is S.STARTING  # unchanged, and nothing recorded
    assert not (mesh_home / "spawns" / f"{supervisor.key}.json").exists()
    assert not (mesh_home / "events.jsonl").exists()


def test_change_state_records_then_announces(supervisor, mesh_home):
    supervisor.spawn_id = "ab12"
    supervisor.change_state(S.EXITED, spawn="ab12", code=127, uptime=0.0)  # could not start
    assert not (mesh_home / "spawns" / f"{supervisor.key}.json").exists()  # not recorded
    supervisor.change_state(S.BACKOFF, spawn="ab12", delay=300.0, n=1, reason="exited")
    record = json.loads((mesh_home / "spawns" / f"{supervisor.key}.json").read_text())
    assert (record["state"], record["spawn"], record["pgid"]) == ("backoff", "ab12", None)
    supervisor.change_state(S.STOPPED, spawn="ab12", code=143, reason="stopped",
                            signal="SIGTERM")
    lines = (mesh_home / "events.jsonl").read_text().splitlines()
    assert [(r["event"], r.get("code"), r.get("delay")) for r in map(json.loads, lines)] == [
        ("spawn.exited", 127, None), ("spawn.restart", None, 300.0),
        ("spawn.stopped", 143, None)]
    assert supervisor.state is S.STOPPED


def test_the_lean_supervisor_imports_none_of_the_command_line():
    """The supervisor lives for hours in a lean interpreter (handoff): its package pulls in
    neither click nor the heavy or needless modules."""
    probe = ("import sys; import meshtools.agents.supervisor; "
             "print(' '.join(m for m in ('click', 'dataclasses', 'uuid', 'psutil', 'redis', "
             "'blessed', 'tabulate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == ""
