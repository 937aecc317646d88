"""coord: the session registry and the inbox, through real processes."""

import json
import os
import subprocess

import pytest

from meshtools.coord import inbox, registry
from meshtools.core.home import MeshHome

from .helpers import lock_table, on_terminal, wait_until


def state_files(mesh_home):
    return sorted(str(p.relative_to(mesh_home)) for p in mesh_home.rglob("*")) \
        if mesh_home.exists() else []


def events(mesh_home):
    return [json.loads(line) for line in (mesh_home / "events.jsonl").read_text().splitlines()]


def register(run, anchor, role="builder", *extra, check=0):
    return run("coord-register", "--role", role, "--pid", str(anchor.pid), *extra, check=check)


# --- liveness, pure ---------------------------------------------------------------------

RECORD = {"heartbeat": "2026-01-01T00:00:00.000Z"}
T0 = 1767225600.0  # that heartbeat, in epoch seconds


@pytest.mark.parametrize("age,pid_alive,expected", [
    (1, True, "alive"), (59.9, True, "alive"), (60, True, "stale"), (599, True, "stale"),
    (600, True, "stale"), (1e6, True, "stale"), (1, False, "dead"), (1, None, "alive"),
    (700, None, "dead"),
])
def test_liveness(age, pid_alive, expected):
    state, measured = registry.liveness(RECORD, T0 + age, 60, 600, pid_alive)
    assert state == expected and measured == pytest.approx(age)


def test_liveness_without_a_heartbeat():
    assert registry.liveness({}, T0, 60, 600, None)[0] == "dead"
    assert registry.liveness({}, T0, 60, 600, True)[0] == "stale"  # its process is there


def test_recipients_routing():
    sessions = [{"id": "builder-1", "role": "builder", "state": "alive"},
                {"id": "builder-2", "role": "builder", "state": "dead"},
                {"id": "memory-1", "role": "memory", "state": "stale"}]
    assert inbox.recipients(sessions, "builder-2", None) == ["builder-2"]  # waits for restart
    assert inbox.recipients(sessions, "builder", None) == ["builder-1"]
    assert inbox.recipients(sessions, "builder", "builder-1") == []  # not to oneself
    assert inbox.recipients(sessions, "all", "memory-1") == ["builder-1"]
    assert inbox.recipients(sessions, "ghost", None) is None


# --- register / peers / heartbeat / unregister ---------------------------------------------

def test_register_allocates_stable_slots(run, anchor_process, repo):
    a = anchor_process()
    first = register(run, a).records[0]
    second = register(run, a).records[0]
    assert (first["id"], second["id"]) == ("builder-1", "builder-2")
    assert first["kind"] == "session" and first["ts"].endswith("Z")
    assert first["pid"] == a.pid and first["branch"] == "main"
    assert first["worktree"] == str(repo)


def test_register_defaults_to_the_parent_process(run, mesh_home):
    record = run("sh", "-c", "coord-register --role memory --json; sleep 0").records[0]
    assert record["pid"] != os.getpid()  # the shell that ran it, not the test


def test_live_duplicate_refused_dead_taken_over(run, anchor_process, mesh_home):
    a, b = anchor_process(), anchor_process()
    register(run, a, "builder", "--id", "b1")
    refused = register(run, b, "builder", "--id", "b1", check=75)
    assert "session id b1 is alive" in refused.stderr and refused.stderr.count("\n") == 1
    a.kill()
    a.wait()
    taken = register(run, b, "builder", "--id", "b1").records[0]
    assert taken["pid"] == b.pid
    kinds = [json.loads(l)["event"] for l in (mesh_home / "events.jsonl").read_text().splitlines()]
    assert "session.takeover" in kinds


def test_dead_slot_is_reused(run, anchor_process):
    a, b = anchor_process(), anchor_process()
    register(run, a)
    a.kill()
    a.wait()
    assert register(run, b).records[0]["id"] == "builder-1"


def test_peers_filters_states_and_prune(run, anchor_process, mesh_home):
    a, b = anchor_process(), anchor_process()
    register(run, a, "builder")
    register(run, b, "memory")
    b.kill()
    b.wait()
    peers = {r["id"]: r for r in run("coord-peers", check=0).records}
    assert peers["builder-1"]["state"] == "alive" and peers["memory-1"]["state"] == "dead"
    assert peers["builder-1"]["heartbeat_age"] >= 0
    assert [r["id"] for r in run("coord-peers", "--role", "memory", check=0).records] == ["memory-1"]
    assert [r["id"] for r in run("coord-peers", "--state", "alive", check=0).records] == ["builder-1"]
    pruned = run("coord-peers", "--prune", check=0).records
    assert [(r["id"], r["pruned"]) for r in pruned] == [("memory-1", True)]
    assert [r["id"] for r in run("coord-peers", check=0).records] == ["builder-1"]


def test_stale_by_heartbeat_age_dead_only_when_gone(run, anchor_process):
    shell = anchor_process()
    register(run, shell, "groomer", "--id", "g1")
    env = {"MESH_STALE_AFTER": "0.01", "MESH_DEAD_AFTER": "1000"}
    assert run("coord-peers", env=env, check=0).records[0]["state"] == "stale"
    env = {"MESH_STALE_AFTER": "0.01", "MESH_DEAD_AFTER": "0.02"}
    assert run("coord-peers", env=env, check=0).records[0]["state"] == "stale"
    shell.kill()
    shell.wait()
    assert run("coord-peers", env=env, check=0).records[0]["state"] == "dead"


@pytest.mark.parametrize("name", ["MESH_STALE_AFTER", "MESH_DEAD_AFTER"])
@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-1"])
def test_a_bad_threshold_in_the_environment_is_a_config_error(run, anchor_process, name,
                                                               value):
    """MESH_STALE_AFTER=abc crashed with a traceback-shaped exit 70; nan never went stale."""
    register(run, anchor_process(), "groomer", "--id", "g1")
    result = run("coord-peers", env={name: value})
    assert result.returncode == 78 and result.stdout == ""
    assert result.stderr == (f"coord-peers: ${name}: expected a finite number of seconds, "
                             f"0 or more, got {value!r}\n")


def test_a_negative_threshold_in_config_is_a_config_error(run, mesh_home, anchor_process):
    register(run, anchor_process(), "groomer", "--id", "g1")
    (mesh_home / "config.toml").write_text("[coord]\ndead_after = -5\n")
    result = run("coord-peers")
    assert result.returncode == 78 and ":2: [coord] dead_after: expected seconds" in result.stderr


def test_a_quiet_live_session_keeps_its_id_and_its_locks(run, anchor_process, repo,
                                                         mesh_home):
    """#2: a shell registered as builder-1, silent past dead_after, was taken over with its
    locks by the next mesh-spawn builder."""
    shell, newcomer = anchor_process(), anchor_process()
    register(run, shell, "builder")
    run("file-lock", "acquire", "--as", "builder-1", "docs", check=0)
    quiet = {"MESH_STALE_AFTER": "0.01", "MESH_DEAD_AFTER": "0.02"}
    wait_until(lambda: run("coord-peers", env=quiet, check=0).records[0]["heartbeat_age"] > 0.05)
    refused = run("coord-register", "--role", "builder", "--id", "builder-1",
                  "--pid", str(newcomer.pid), env=quiet)
    assert refused.returncode == 75 and "builder-1 is stale" in refused.stderr
    fresh = run("coord-register", "--role", "builder", "--pid", str(newcomer.pid), env=quiet,
                check=0).records[0]
    assert fresh["id"] == "builder-2"  # the next free slot, not the quiet one's
    assert lock_table(mesh_home)["locks"]["docs"]["pid"] == shell.pid
    assert "session.takeover" not in [e["event"] for e in events(mesh_home)]


def test_a_dead_sessions_locks_are_released_when_its_id_is_reused(run, anchor_process, repo,
                                                                  mesh_home):
    dead, newcomer = anchor_process(), anchor_process()
    register(run, dead, "builder", "--id", "b1")
    run("file-lock", "acquire", "--as", "b1", "docs", "web", check=0)
    dead.kill()
    dead.wait()
    register(run, newcomer, "builder", "--id", "b1")
    assert lock_table(mesh_home)["locks"] == {}  # freed, not inherited by the newcomer
    released = [e for e in events(mesh_home) if e["event"] == "lock.released"]
    assert sorted(e["scope"] for e in released) == ["docs", "web"]
    assert all("was dead and taken over" in e["reason"] for e in released)
    assert run("file-lock", "status", check=0).records == []


def test_pruning_a_dead_session_releases_its_locks(run, anchor_process, repo, mesh_home):
    dead = anchor_process()
    register(run, dead, "builder", "--id", "b1")
    run("file-lock", "acquire", "--as", "b1", "docs", check=0)
    dead.kill()
    dead.wait()
    run("coord-peers", "--prune", check=0)
    assert lock_table(mesh_home)["locks"] == {}  # a later b1 finds nothing of the dead one's
    [released] = [e for e in events(mesh_home) if e["event"] == "lock.released"]
    assert "was dead and pruned" in released["reason"]


def test_heartbeat_phase_and_unregister(run, anchor_process, mesh_home):
    register(run, anchor_process(), "builder", "--id", "b1")
    beat = run("coord-heartbeat", "--as", "b1", "--phase", "tool Edit", check=0).records[0]
    assert beat["phase"] == "tool Edit"
    run("coord-send", "b1", "keep me", check=0)
    gone = run("coord-unregister", env={"MESH_SESSION": "b1"}, check=0).records[0]
    assert gone["id"] == "b1"
    assert run("coord-peers", check=0).records == []
    assert run("coord-heartbeat", "--as", "b1").returncode == 65
    assert (mesh_home / "inbox" / "b1" / "new").exists()  # the inbox outlives the session
    kinds = [json.loads(l)["event"] for l in (mesh_home / "events.jsonl").read_text().splitlines()]
    assert {"session.registered", "session.phase", "session.unregistered"} <= set(kinds)


def test_corrupt_record_is_skipped_with_a_warning(run, anchor_process, mesh_home):
    register(run, anchor_process(), "builder", "--id", "ok")
    (mesh_home / "sessions" / "broken").mkdir()
    (mesh_home / "sessions" / "broken" / "session.json").write_text("{half")
    result = run("coord-peers", check=0)
    assert [r["id"] for r in result.records] == ["ok"] and "skipping corrupt" in result.stderr


# --- send / recv -------------------------------------------------------------------------

def test_send_to_id_role_all_and_recv(run, anchor_process):
    a = anchor_process()
    for sid, role in (("b1", "builder"), ("b2", "builder"), ("m1", "memory")):
        register(run, a, role, "--id", sid)
    run("coord-send", "--as", "m1", "b1", "direct", check=0)
    to_role = run("coord-send", "--as", "m1", "builder", "to builders", check=0).records
    assert sorted(r["to"] for r in to_role) == ["b1", "b2"]
    to_all = run("coord-send", "--as", "m1", "all", "everyone", check=0).records
    assert sorted(r["to"] for r in to_all) == ["b1", "b2"]  # not the sender
    peeked = run("coord-recv", "--as", "b1", "--peek", check=0).records
    assert [m["body"] for m in peeked] == ["direct", "to builders", "everyone"]
    got = run("coord-recv", "--as", "b1", "--limit", "2", check=0).records
    assert [m["body"] for m in got] == ["direct", "to builders"]
    assert all(m["from"] == "m1" and m["kind"] == "message" for m in got)
    rest = run("coord-recv", "--as", "b1", check=0).records
    assert [m["body"] for m in rest] == ["everyone"]
    assert run("coord-recv", "--as", "b1", check=0).records == []
    again = run("coord-recv", "--as", "b1", "--all", check=0).records
    assert len(again) == 3 and all(m["read"] for m in again)


def test_pipeline_peers_into_send(run, anchor_process, repo):
    a = anchor_process()
    for sid, role in (("b1", "builder"), ("b2", "builder"), ("r1", "research")):
        register(run, a, role, "--id", sid)
    result = run("sh", "-c", 'coord-peers --role builder | coord-send - "rebase on main"', check=0)
    assert sorted(r["to"] for r in result.records) == ["b1", "b2"]
    assert run("coord-recv", "--as", "r1", check=0).records == []
    assert run("coord-recv", "--as", "b2", check=0).records[0]["body"] == "rebase on main"


def test_message_from_stdin_text_and_json_lines(run, anchor_process):
    register(run, anchor_process(), "builder", "--id", "b1")
    run("coord-send", "b1", "-", input="line one\nline two\n", check=0)
    run("coord-send", "b1", "-", input='{"task": 1}\n{"task": 2}\n', check=0)
    bodies = run("coord-recv", "--as", "b1", check=0).records
    assert bodies[0]["body"] == "line one\nline two\n"
    assert [m["data"] for m in bodies[1:]] == [{"task": 1}, {"task": 2}]


def test_follow_prints_messages_as_they_arrive(run, anchor_process):
    register(run, anchor_process(), "builder", "--id", "b1")
    follower = subprocess.Popen(["coord-recv", "--as", "b1", "--follow"],
                                stdout=subprocess.PIPE, text=True)
    try:
        run("coord-send", "b1", "first", check=0)
        assert json.loads(follower.stdout.readline())["body"] == "first"
        run("coord-send", "b1", "second", check=0)
        assert json.loads(follower.stdout.readline())["body"] == "second"
    finally:
        follower.terminate()
        assert follower.wait(timeout=10) == 143


def test_malformed_message_file_is_moved_aside(run, anchor_process, mesh_home):
    register(run, anchor_process(), "builder", "--id", "b1")
    run("coord-send", "b1", "good", check=0)
    bad = mesh_home / "inbox" / "b1" / "new" / "1.bad.message"
    bad.write_text("{not json")
    result = run("coord-recv", "--as", "b1", check=0)
    assert [m["body"] for m in result.records] == ["good"]
    assert "malformed message" in result.stderr and not bad.exists()


@pytest.mark.parametrize("argv,code,message", [
    (["coord-register", "--role", "builder", "--id", "../x"], 65, "invalid session id"),
    (["coord-register", "--role", "builder", "--id", ""], 65, "invalid session id"),
    (["coord-register", "--role", "builder", "--id", "a" * 65], 65, "invalid session id"),
    (["coord-register", "--role", "builder", "--id", "a/b"], 65, "invalid session id"),
    (["coord-register", "--role", "../../etc"], 65, "invalid role"),
    (["coord-register", "--role", "builder", "--pid", "999999999"], 65, "no such process"),
    (["coord-register"], 64, "Missing option"),
    (["coord-send", "ghost", "hi"], 65, "unknown peer 'ghost'"),
    (["coord-send", "../etc", "hi"], 65, "unknown peer"),
    (["coord-send", "security", "hi"], 65, "no live peer has the role 'security'"),
    (["coord-register", "--role", "wizard"], 65, "unknown role 'wizard' (roles: anchor, "
                                                 "builder, groomer, memory, research, "
                                                 "security, triage)"),
    (["coord-register", "--role", "Builder"], 65, "did you mean 'builder'?"),
    (["coord-send", "-", "-"], 64, "cannot both come from stdin"),
    (["coord-recv"], 64, "who is calling"),
    (["coord-recv", "--as", ".hidden"], 65, "invalid session id"),
    (["coord-heartbeat", "--as", "nobody"], 65, "unknown session nobody"),
    (["coord-peers", "--state", "zombie"], 64, "Invalid value"),
])
def test_bad_input_one_line_right_code_nothing_written(run, mesh_home, argv, code, message):
    before = state_files(mesh_home)
    result = run(*argv, input="")
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert state_files(mesh_home) == before


@pytest.mark.parametrize("stdin,message", [
    ('{"id": "b1"}\n{"id": \n', "stdin line 2: malformed JSON"),
    ('{"id": "b1"}\n[1]\n', "stdin line 2: expected a JSON object"),
    ('{"name": "b1"}\n', "stdin line 1: a peer record needs a string 'id'"),
    ('{"id": "../../x"}\n', "invalid peer id"),
])
def test_malformed_recipients_send_nothing(run, anchor_process, mesh_home, stdin, message):
    register(run, anchor_process(), "builder", "--id", "b1")
    result = run("coord-send", "-", "hello", input=stdin)
    assert result.returncode == 65 and message in result.stderr
    assert not (mesh_home / "inbox").exists() or not list((mesh_home / "inbox").rglob("new/*"))


def test_malformed_message_lines_send_nothing(run, anchor_process, mesh_home):
    register(run, anchor_process(), "builder", "--id", "b1")
    result = run("coord-send", "b1", "-", input='{"ok": 1}\n{"broken"\n')
    assert result.returncode == 65 and "stdin line 2" in result.stderr
    assert not list((mesh_home).rglob("new/*"))


def test_library_get_and_all(mesh_home, anchor_process):
    home = MeshHome(str(mesh_home))
    a = anchor_process()
    record, previous = registry.register(home, "triage", None, a.pid)
    assert previous is None and registry.get(home, record["id"]) == record
    assert [r["id"] for r in registry.all_sessions(home)] == ["triage-1"]
    wait_until(lambda: registry.classify(home, record)["state"] == "alive")


def test_phase_age_tells_a_stuck_agent_from_a_busy_one(run, anchor_process):
    keeper = anchor_process()
    run("coord-register", "--role", "builder", "--id", "b1", "--pid", str(keeper.pid), check=0)
    run("coord-heartbeat", "--as", "b1", "--phase", "tool Bash", check=0)
    first = run("coord-peers", "--json", check=0).records[0]
    since = first["phase_since"]
    run("coord-heartbeat", "--as", "b1", "--phase", "tool Bash", check=0)  # still at it
    again = run("coord-peers", "--json", check=0).records[0]
    assert again["phase_since"] == since and again["heartbeat"] > first["heartbeat"]
    assert again["phase_age"] >= first["phase_age"] >= 0
    run("coord-heartbeat", "--as", "b1", "--phase", "thinking", check=0)  # moved on
    moved = run("coord-peers", "--json", check=0).records[0]
    assert moved["phase_since"] > since and moved["phase"] == "thinking"


# --- becoming a session from a shell; what a person sees on a terminal -----------------------

@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_shell_eval_binds_the_session_to_the_calling_shell(run, mesh_home, shell):
    """#11: eval "$(coord-register ... --json | jq ...)" bound the session to a subshell."""
    script = ('eval "$(coord-register --role builder --shell)"; echo "$$ $MESH_SESSION"; '
              'coord-peers --json')
    out = run(shell, "-c", script, check=0).stdout.splitlines()
    shell_pid, session = out[0].split()
    record = json.loads(out[1])
    assert session == "builder-1" and record["id"] == "builder-1"
    assert record["pid"] == int(shell_pid) and record["state"] == "alive"
    assert run("coord-register", "--role", "memory", "--shell", "--pid", str(os.getpid()),
               check=0).stdout == "export MESH_SESSION=memory-1;\n"


def test_a_shell_that_is_one_session_registering_another_role_is_told_so(run, mesh_home):
    """With $MESH_SESSION=research-1 exported, `coord-register --role triage` answered
    "session id research-1 is alive" (75): an id the caller never gave."""
    script = ('eval "$(coord-register --role research --shell)"; '
              'coord-register --role triage; echo "rc=$?"')
    done = run("sh", "-c", script)
    assert done.stdout.splitlines()[-1] == "rc=64"
    assert done.stderr == ("coord-register: you are research-1, a research session (--as / "
                           "$MESH_SESSION): pass --id for a triage session, or unset "
                           "MESH_SESSION\n")
    again = run("sh", "-c", 'eval "$(coord-register --role research --shell)"; '
                'coord-register --role research --shell')
    assert again.returncode == 75  # the same role: its own live id, as before


def test_a_terminal_is_told_how_to_become_the_session(anchor_process, mesh_home):
    code, shown, err = on_terminal(["coord-register", "--role", "builder",
                                    "--pid", str(anchor_process().pid)])
    assert code == 0 and "registered builder-1" in shown
    assert "export MESH_SESSION=builder-1" in err


def test_no_peers_is_said_on_a_terminal_and_silent_in_a_pipe(run, mesh_home):
    code, shown, err = on_terminal(["coord-peers"])
    assert code == 0 and shown == ""
    assert err == "no peers (coord-register --role ROLE to join)\n"
    piped = run("coord-peers", check=0)
    assert piped.stdout == "" and piped.stderr == ""


def test_send_to_a_role_whose_peers_are_dead(run, anchor_process):
    gone = anchor_process()
    register(run, gone, "security", "--id", "s1")
    register(run, anchor_process(), "builder", "--id", "b1")
    gone.kill()
    gone.wait()
    result = run("coord-send", "--as", "b1", "security", "audit this")
    assert result.returncode == 65 and "no live peer has the role 'security'" in result.stderr


# --- one lifecycle: however a session ends, one event says so, with its role ------------

def _by_coord_unregister(run, anchor_process):
    register(run, anchor_process(), "builder", "--id", "b1")
    run("coord-unregister", "--as", "b1", check=0)


def _by_its_supervisor(run, anchor_process):
    run("mesh-supervise", "--restart", "on-failure", "--role", "builder", "--session", "b1",
        "--", "true", check=0, timeout=30)


def _by_the_anchor_finding_it_dead(run, anchor_process):
    dead = anchor_process()
    register(run, dead, "builder", "--id", "b1")
    run("file-lock", "acquire", "--as", "b1", "docs", check=0)
    dead.kill()
    dead.wait()
    run("mesh-anchor", "--once", "--no-respawn", check=0)


@pytest.mark.parametrize("end", [_by_coord_unregister, _by_its_supervisor,
                                 _by_the_anchor_finding_it_dead])
def test_a_session_ends_in_one_event_with_its_role(run, anchor_process, repo, mesh_home, end):
    """Issue 9: the supervisor's end said no role, the anchor's loop said nothing at all."""
    end(run, anchor_process)
    [left] = [e for e in events(mesh_home) if e["event"] in ("session.unregistered",
                                                             "session.pruned")]
    assert (left["event"], left["id"], left["role"]) == ("session.unregistered", "b1", "builder")
    assert left["reason"]
    assert registry.get(MeshHome(str(mesh_home)), "b1") is None
    assert lock_table(mesh_home)["locks"] == {}  # a dead one's are released with it


def test_a_supervisors_running_never_hides_what_its_child_already_said(mesh_home):
    """The supervisor writes phase `running` just after it starts its child; a worker quick
    enough to say `waiting` first was overwritten, and `meshctl init` waited for a `waiting`
    that never came. A phase set after the child's start is kept."""
    import time

    home = MeshHome(str(mesh_home))
    home.ensure()
    registry.register(home, "builder", "builder-1", os.getpid(), "registered")
    started = time.time()
    time.sleep(0.01)  # the child's word comes after its start
    registry.heartbeat(home, "builder-1", "waiting")
    record, _ = registry.heartbeat(home, "builder-1", "running", unless_newer_than=started)
    assert record["phase"] == "waiting"
    record, _ = registry.heartbeat(home, "builder-1", "running", unless_newer_than=time.time())
    assert record["phase"] == "running"  # nothing newer than that: the supervisor's word
