"""meshctl status: the mesh's health (mesh/health.py), its screen, JSON lines and --check."""

import os
import time
from pathlib import Path

from meshtools.coord import registry
from meshtools.mesh import health

from .helpers import (kill_tree, of_kind, on_terminal, redis_of, register_dead, spawn_worker,
                      status, wait_until)

# --- pure: problems, records, render, peer_state ----------------------------------------

PEER = {"id": "builder-1", "role": "builder", "state": "alive", "pid": 42, "host": "h",
        "phase": "running", "phase_age": 12.0, "heartbeat_age": 1.0, "task": "t-7",
        "task_age": 12.0, "worktree": "/w", "branch": "builder"}
QUEUE = {"ts": "2026-01-01T00:00:00Z", "kind": "queue", "queue": "builder",
         "stream": "tasks:queue:builder", "length": 3, "pending": 1, "lag": 2,
         "consumers": [{"name": "builder-1", "alive": True}], "dead": 0, "oldest_age": 95.0,
         "oldest_pending_age": 12.0}


def healthy(**changes) -> dict:
    snapshot = {"ts": "2026-01-01T00:00:00Z", "home": "/m",
                "redis": {"url": "unix:///m/redis.sock", "up": True, "version": "7.2.4",
                          "rtt_ms": 0.25, "used_memory": 2**20,
                          "persistence": {"aof": True, "rdb": False}, "error": None, "age": 0},
                "peers": [PEER], "queues": [QUEUE],
                "dead": {"count": 0, "by_queue": {}, "ids": [], "age": 0}, "pause": None,
                "budget": {"spent_today_usd": 1.5, "daily_usd": 10.0, "error": None, "age": 0}}
    snapshot.update(changes)
    snapshot["problems"] = health.problems(snapshot)
    return snapshot


def test_a_healthy_mesh_has_no_problems_and_says_so():
    snapshot = healthy()
    assert snapshot["problems"] == []
    screen = "\n".join(health.render(snapshot))
    assert "up 7.2.4" in screen and "persistence aof" in screen
    row = next(line.split() for line in health.render(snapshot) if "builder-1" in line)
    assert row == ["builder", "builder-1", "alive", "running", "12s", "t-7", "12s", "42"]
    queue = next(line.split() for line in health.render(snapshot) if "builder " in line
                 and "builder-1" not in line)
    assert queue == ["builder", "3", "1", "1m", "1", "0"]
    assert "$1.50 spent today of $10.00 a day" in screen
    assert screen.endswith("✔ nothing needs you")


def test_each_kind_of_trouble_is_a_problem_with_a_line():
    peers = [dict(PEER, id="b-1", state="dead"), dict(PEER, id="b-2", phase="FATAL",
                                                    state="FATAL"),
             dict(PEER, id="b-3", state="stuck", phase="thinking", phase_age=4000),
             dict(PEER, id="b-4", state="stale")]
    snapshot = healthy(peers=peers, pause={"reason": "manual", "until_ts": "T", "by": "me"},
                       budget={"spent_today_usd": 10.0, "daily_usd": 10.0},
                       dead={"count": 2, "by_queue": {"builder": 2}, "ids": ["x", "y"]})
    found = [(p["kind"], p["subject"]) for p in snapshot["problems"]]
    assert found == [("dead", "b-1"), ("fatal", "b-2"), ("stuck", "b-3"),
                     ("paused", "manual"), ("budget", "daily_usd"), ("dead_letters", "builder")]
    texts = [p["text"] for p in snapshot["problems"]]
    assert "b-1 (builder) is dead: pid 42 on h is gone, task t-7 left unfinished" in texts
    assert "b-3 (builder) is stuck: thinking for 1h, task t-7 left unfinished" in texts
    assert "over budget: $10.00 spent today of $10.00 a day ([budget] daily_usd)" in texts
    screen = health.render(snapshot)
    assert [line for line in screen if line.startswith("✘")] == [f"✘ {t}" for t in texts]
    assert "dead      2 letters: x, y" in screen and "paused    until T (manual)" in screen


def test_redis_down_is_a_problem_and_the_rest_is_unknown_not_a_crash():
    snapshot = healthy(redis={"url": "unix:///m/r.sock", "up": False, "error": "refused"},
                       queues=None, dead=None, budget={"spent_today_usd": None,
                                                       "daily_usd": None})
    assert snapshot["problems"] == [{"kind": "redis", "subject": "unix:///m/r.sock",
                                     "text": "refused"}]
    screen = health.render(snapshot)
    assert screen[0] == "redis     DOWN: refused"
    assert "queues    unknown (Redis is down)" in screen and "budget    unknown, no daily cap" \
        in screen
    assert any("builder-1" in line for line in screen)  # the registry still shows


def test_records_are_one_json_line_per_item_with_kind_and_ts():
    snapshot = healthy(pause={"reason": "manual", "until_ts": "T", "by": None})
    lines = health.records(snapshot)
    assert [r["kind"] for r in lines] == ["redis", "session", "queue", "dead", "pause",
                                          "budget", "problem"]
    assert all(r["ts"] == snapshot["ts"] for r in lines)
    assert lines[1]["task"] == "t-7" and lines[-1]["problem"] == "paused"
    assert [r["kind"] for r in health.records(healthy(queues=None, dead=None))] == [
        "redis", "session", "budget"]


def test_peer_state_is_fatal_or_stuck_before_its_liveness():
    assert registry.peer_state({"state": "dead", "phase": "FATAL"}, 60) == "FATAL"
    assert registry.peer_state({"state": "alive", "phase": "tool Edit", "phase_age": 61},
                               60) == "stuck"
    assert registry.peer_state({"state": "alive", "phase": "waiting", "phase_age": 999},
                               60) == "alive"  # waiting for a task never sticks
    assert registry.peer_state({"state": "stale", "phase": "thinking", "phase_age": 999},
                               60) == "stale"


# --- the command, on a real mesh ------------------------------------------------------------


def test_a_healthy_mesh_checks_silently_and_shows_one_screen(run, repo):
    worker = spawn_worker(run)
    try:
        checked = status(run, "--check", check=0)
        assert checked.stdout == "" and checked.stderr == ""
        code, shown, err = on_terminal(["meshctl", "status", "--check"])
        assert (code, shown.strip(), err) == (0, "ok: nothing needs you", "")
        code, shown, err = on_terminal(["meshctl", "status"])
        assert code == 0 and err == ""
        assert "builder-1" in shown and "waiting" in shown and "persistence aof" in shown
        assert shown.rstrip().endswith("✔ nothing needs you")
    finally:
        kill_tree(worker["pid"])


def test_status_shows_the_running_task_the_queues_dead_letters_and_a_pause(run, repo,
                                                                          tmp_path):
    worker = spawn_worker(run)
    try:
        run("queue-push", "--role", "builder", "--id", "bad", "--max-attempts", "1", "exit 3",
            check=0)
        run("queue-results", "--wait", "bad", "--timeout", "30", check=1)  # it failed
        release = tmp_path / "release"
        run("queue-push", "--role", "builder", "--id", "slow",
            f"while [ ! -e {release} ]; do sleep 0.05; done", check=0)
        run("queue-push", "--id", "waits", "true", check=0)  # no worker drains default
        wait_until(lambda: of_kind(status(run), "session")[0]["phase"] == "running",
                   timeout=60)  # each look is a whole meshctl status: slow on a busy machine

        result = status(run, check=0)
        [peer] = of_kind(result, "session")
        assert (peer["id"], peer["state"], peer["task"]) == ("builder-1", "alive", "slow")
        assert peer["task_age"] is not None
        queues = {q["queue"]: q for q in of_kind(result, "queue")}
        assert queues["default"]["length"] == 1 and queues["default"]["oldest_age"] >= 0
        assert queues["builder"]["pending"] == 1
        [dead] = of_kind(result, "dead")
        assert dead["count"] == 1 and dead["ids"] == ["bad"]
        assert [(p["problem"], p["subject"]) for p in of_kind(result, "problem")] == [
            ("no_worker", "default"), ("dead_letters", "builder")]
        assert of_kind(result, "redis")[0]["up"] is True
        code, shown, _ = on_terminal(["meshctl", "status"])
        row = next(line.split() for line in shown.splitlines() if "builder-1" in line)
        assert code == 0 and row[:4] == ["builder", "builder-1", "alive", "running"]
        assert row[5] == "slow" and "dead      1 letter: bad" in shown

        run("queue-pause", "--for", "5m", check=0)
        checked = status(run, "--check", check=1)
        assert checked.stdout == ""
        assert checked.stderr.splitlines() == [
            "meshctl status: no_worker: 1 task on queue default and no live worker drains "
            "it: mesh-spawn ROLE --queue (or meshctl init) starts one",
            f"meshctl status: paused: {of_kind(status(run), 'problem')[1]['text']}",
            "meshctl status: dead_letters: 1 dead letter on queue builder: queue-dead list "
            "shows why"]
        assert "dispatch paused until" in checked.stderr
        release.touch()
    finally:
        kill_tree(worker["pid"])


def test_a_killed_worker_is_dead_and_fails_the_check(run, repo):
    worker = spawn_worker(run)
    kill_tree(worker["pid"])
    [peer] = of_kind(status(run, check=0), "session")
    assert peer["state"] == "dead" and peer["pid"] == worker["pid"]
    checked = status(run, "--check", check=1)
    assert checked.stderr.startswith("meshctl status: dead: builder-1 (builder) is dead: pid")


def test_over_budget_fails_the_check(run, repo, mesh_home, monkeypatch):
    from meshtools.queue import pause
    from meshtools.queue.names import Names

    monkeypatch.setenv("MESH_NOW", str(pause.next_utc_midnight(time.time()) + 12 * 3600))
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text("[budget]\ndaily_usd = 0.05\n")
    pauses = pause.Pauses(redis_of(mesh_home), Names())
    assert status(run, "--check", check=0).stderr == ""
    pauses.account({"cost_usd": 0.06}, 0.05, by="builder-1")  # as the worker does after a run
    [budget] = of_kind(status(run, check=0), "budget")
    assert (budget["spent_today_usd"], budget["daily_usd"]) == (0.06, 0.05)
    checked = status(run, "--check", check=1)
    assert "paused: dispatch paused until" in checked.stderr  # the budget's pause
    assert ("meshctl status: budget: over budget: $0.06 spent today of $0.05 a day "
            "([budget] daily_usd)") in checked.stderr.splitlines()


def test_with_redis_down_status_still_shows_the_sessions(run, repo, anchor_process):
    sleeper = anchor_process()
    run("coord-register", "--role", "builder", "--id", "b1", "--pid", str(sleeper.pid),
        check=0)
    run("mesh-redis", "start", check=0)
    run("mesh-redis", "stop", check=0)
    result = status(run, check=0)
    [redis] = of_kind(result, "redis")
    down = "the mesh's Redis is not running (meshctl init starts it)"  # not redis-py's words
    assert redis["up"] is False and redis["error"] == down
    assert [p["id"] for p in of_kind(result, "session")] == ["b1"]
    code, shown, _ = on_terminal(["meshctl", "status"])
    assert code == 0 and f"redis     DOWN: {down}" in shown and "b1" in shown
    checked = status(run, "--check", check=1)
    assert checked.stderr == f"meshctl status: redis: {down}\n"
    top = run("mesh-top", "--panel", "redis", check=0).records
    assert top[0]["error"] == down
    assert not os.path.exists(os.path.join(os.environ["MESH_HOME"], "redis", "redis.pid")), \
        "status never starts the mesh's Redis"


def test_no_mesh_is_a_configuration_error(run, tmp_path, monkeypatch):
    result = run("meshctl", "status", env={"MESH_HOME": str(tmp_path / "none")}, check=78)
    assert "no mesh at" in result.stderr and "meshctl init" in result.stderr
    monkeypatch.delenv("MESH_HOME")
    outside = run("meshctl", "status", "--check", cwd=str(tmp_path), check=78)
    assert "not inside a git repository" in outside.stderr


def test_status_starts_lean():
    """meshctl status imports neither redis nor tabulate before it needs them."""
    import subprocess
    import sys

    probe = ("import sys; import meshtools.commands.status, meshtools.mesh.health; "
             "print(' '.join(m for m in ('redis', 'tabulate', 'psutil') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == ""


def test_a_redis_url_with_a_password_is_shown_without_it(run, repo, mesh_home):
    from meshtools.core.home import MeshHome
    from meshtools.queue.server import EmbeddedRedis

    server = EmbeddedRedis(MeshHome(str(mesh_home)))
    server.start()
    given = {"MESH_REDIS_URL": server.authed_url()}
    password = server.password()
    result = run("meshctl", "status", "--json", env=given, check=0)
    assert of_kind(result, "redis")[0]["url"] == server.url
    assert password not in result.stdout
    server.stop()
    checked = run("meshctl", "status", "--check", env=given, check=1)
    assert f"redis unavailable at {server.url}" in checked.stderr
    assert password not in checked.stderr


def test_collect_without_redis_still_has_every_key(mesh_home):
    from meshtools.core.home import MeshHome

    mesh_home.mkdir(parents=True)
    snapshot = health.collect(MeshHome(str(mesh_home)))
    assert set(snapshot) == {"ts", "home", "redis", "peers", "queues", "dead", "pause",
                             "budget", "landing", "anchor", "problems"}
    assert snapshot["redis"]["up"] is False and snapshot["redis"]["version"] is None
    assert [p["kind"] for p in snapshot["problems"]] == ["redis"]


def test_todays_spend_is_counted_per_role_for_the_cost_column(run, repo, anchor_process):
    """The dash's COST column (and mesh-top's session records) showed "-" for every peer:
    spend was counted for the whole mesh only."""
    from meshtools.queue import pause
    from meshtools.queue.names import Names

    mesh_home = Path(os.environ["MESH_HOME"])
    pauses = pause.Pauses(redis_of(mesh_home), Names())
    for role, usd in (("builder", 0.25), ("builder", 0.5), ("triage", 0.125)):
        pauses.account({"cost_usd": usd, "role": role}, None, by=f"{role}-1")
    [budget] = of_kind(status(run, check=0), "budget")
    assert budget["spent_today_usd"] == 0.875
    assert budget["by_role"] == {"builder": 0.75, "triage": 0.125}
    run("coord-register", "--role", "builder", "--id", "builder-1", "--pid",
        str(anchor_process().pid), check=0)
    [peer] = [r for r in run("mesh-top", "--json", check=0).records if r["kind"] == "session"]
    assert peer["cost"] == 0.75


def test_a_waiting_peer_is_paused_while_dispatch_is_and_a_running_one_alive():
    peers = [{"id": "builder-1", "state": "alive", "task": None},
             {"id": "builder-2", "state": "alive", "task": "t1"},
             {"id": "triage-1", "state": "dead", "task": None}]
    assert health.held_by_pause(peers, None) == peers
    assert [p["state"] for p in health.held_by_pause(peers, {"reason": "manual"})] == \
        ["paused", "alive", "dead"]


# --- work nobody does, and landing that waits (issue 17 item 12) ------------------------

def test_queued_tasks_with_no_session_at_all_say_the_mesh_is_down():
    idle = dict(QUEUE, consumers=[{"name": "builder-1", "alive": False}])
    snapshot = healthy(peers=[], queues=[idle, dict(QUEUE, queue="anchor", length=1)],
                       anchor={"running": False})
    assert snapshot["problems"] == [{"kind": "mesh_down", "subject": None, "text": (
        "the mesh is down: 3 tasks queued (builder) and no session runs to take them: "
        "meshctl init starts it")}]  # the anchor queue has a live consumer in QUEUE


def test_a_queue_no_live_worker_drains_and_a_mesh_without_its_anchor_loop():
    anchor = dict(PEER, id="anchor-1", role="anchor", state="dead", task=None)
    waiting = dict(QUEUE, queue="default", length=1, consumers=[])
    snapshot = healthy(peers=[PEER, anchor], queues=[QUEUE, waiting], anchor={"running": False})
    assert [(p["kind"], p["subject"]) for p in snapshot["problems"]] == [
        ("dead", "anchor-1"), ("no_worker", "default"), ("anchor", "anchor-1")]
    texts = [p["text"] for p in snapshot["problems"]]
    assert texts[1] == ("1 task on queue default and no live worker drains it: mesh-spawn "
                        "ROLE --queue (or meshctl init) starts one")
    assert texts[2].startswith("no mesh-anchor runs for anchor-1 (dead): finished work does "
                               "not land")
    assert healthy(peers=[PEER, dict(anchor, state="alive")],
                   anchor={"running": True})["problems"] == []


def test_landing_that_waits_or_was_cut_off_says_why():
    blocked = {"reason": "the main checkout /r has 1 uncommitted change (commit or stash "
                         "them); landing waits, main unchanged", "task": "t-7"}
    cut = {"old": "a" * 40, "new": "b" * 40, "branch": "main", "checkout": "/r"}
    snapshot = healthy(landing={"blocked": blocked, "interrupted": cut})
    assert [(p["kind"], p["subject"]) for p in snapshot["problems"]] == [
        ("landing", "t-7"), ("landing_interrupted", "main")]
    assert snapshot["problems"][0]["text"] == f"landing waits (task t-7): {blocked['reason']}"
    assert "moved main from aaaaaaaaaaaa to bbbbbbbbbbbb" in snapshot["problems"][1]["text"]


def test_status_check_names_queued_work_with_no_mesh_and_a_dead_anchor(run, repo, mesh_home):
    redis_of(mesh_home)
    run("queue-push", "--role", "builder", "--id", "orphan", "true", check=0)
    checked = status(run, "--check", check=1)
    assert checked.stderr == ("meshctl status: mesh_down: the mesh is down: 1 task queued "
                              "(builder) and no session runs to take them: meshctl init "
                              "starts it\n")
    register_dead(run, "anchor", "anchor-1")
    kinds = [line.split(": ")[1] for line in status(run, "--check", check=1).stderr.splitlines()]
    assert kinds == ["dead", "mesh_down", "anchor"]


def test_status_check_names_a_landing_that_waits_for_the_main_checkout(run, repo, mesh_home):
    from .helpers import commit

    redis_of(mesh_home)
    builder = run("mesh-worktree", "ensure", "builder", check=0).records[0]["path"]
    commit(builder, "docs/x.md", "x\n", "x")
    (repo / "README.md").write_text("the user's edit\n")
    run("mesh-pick", "--role", "builder", "--task", "t-9", check=75)
    [line] = status(run, "--check", check=1).stderr.splitlines()
    assert line.startswith("meshctl status: landing: landing waits (task t-9): the main "
                           f"checkout {repo} has 1 uncommitted change")
    (repo / "README.md").write_text("hello\n")
    run("mesh-pick", "--role", "builder", check=0)
    assert status(run, "--check", check=0).stderr == ""


def test_after_meshctl_down_queued_work_says_the_mesh_is_down(run, repo):
    run("meshctl", "init", "--agent", "shell", "--roles", "builder,-anchor", check=0,
        timeout=120)
    run("meshctl", "down", check=0, timeout=120)
    run("queue-push", "--role", "builder", "--id", "later", "true", check=0)
    checked = status(run, "--check", check=1)
    assert checked.stderr.splitlines() == [
        "meshctl status: mesh_down: the mesh is down: 1 task queued (builder) and no session "
        "runs to take them: meshctl init starts it"]
