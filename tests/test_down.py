"""meshctl down: every process of the mesh stopped (found from its records), no task lost,
sessions unregistered, queues and results kept; a process the records do not prove to be
the mesh's is never signalled."""

import fcntl
import json
import os
import signal
import subprocess

import psutil
import pytest

from meshtools.coord import registry
from meshtools.core import proc
from meshtools.core.home import MeshHome
from meshtools.mesh import stop
from meshtools.queue.server import EmbeddedRedis

from .helpers import on_terminal, redis_of, wait_for_output, wait_until


def spawn(run, role):
    return run("mesh-spawn", role, "--queue", "--agent", "shell", "--detach", "--json",
               check=0, timeout=60).records[-1]


def down(run, *args, check=0):
    return run("meshctl", "down", "--json", *args, check=check, timeout=120)


def mesh_processes(mesh_home, spare=()):
    """Every live process whose environment names this MESH_HOME (what the mesh started),
    but the embedded Redis and the pids in spare."""
    redis = EmbeddedRedis(MeshHome(str(mesh_home))).pid()
    mark = f"MESH_HOME={mesh_home}".encode()
    found = []
    for p in psutil.process_iter():
        if p.pid in (os.getpid(), redis, *spare):
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            with open(f"/proc/{p.pid}/environ", "rb") as f:
                if mark in f.read().split(b"\0"):
                    found.append(p)
        except (OSError, psutil.Error):
            continue
    return found


@pytest.fixture
def mesh(mesh_home, repo, run):
    """A mesh with its Redis up; whatever a failing test leaves running is killed after."""
    redis_of(mesh_home)
    yield mesh_home
    for p in mesh_processes(mesh_home):
        try:
            p.kill()
        except psutil.Error:
            pass


def wait_running(sid, task):
    def running():
        record = registry.get(MeshHome.find(), sid)
        return record and record.get("task") == task

    wait_until(running, timeout=30)


def result_of(run, task):
    return run("queue-results", "--wait", task, "--timeout", "60", check=0,
               timeout=90).records[0]


def test_down_stops_every_process_of_the_mesh_and_keeps_its_queues(run, mesh, repo):
    workers = [spawn(run, role) for role in ("builder", "research")]
    anchor = subprocess.Popen(["mesh-anchor", "--interval", "0.2"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: stop.survey(MeshHome.find())["stop"].__len__() == 3, timeout=30)
        run("queue-push", "--role", "builder", "--id", "t1", "echo hi", check=0)
        assert result_of(run, "t1")["status"] == "ok"
        run("queue-push", "--role", "research", "--id", "t2", "--max-attempts", "3",
            "echo later", check=0)  # may run before the stop or stay queued: never lost
        records = down(run).records
    finally:
        anchor.wait(timeout=30)
    stops = {r["name"]: r for r in records if r["kind"] == "stop"}
    assert set(stops) == {"builder-1", "research-1", "anchor"}
    assert {r["how"] for r in stops.values()} == {"stopped"}
    assert stops["builder-1"]["pid"] == workers[0]["pid"] and anchor.returncode == 143
    summary = records[-1]
    assert summary["kind"] == "down" and summary["stopped"] == 3 and not summary["not_stopped"]
    assert mesh_processes(mesh) == []
    assert registry.all_sessions(MeshHome.find()) == []
    assert result_of(run, "t1")["output"].strip() == "hi"  # results stay
    assert os.path.isdir(workers[0]["worktree"])
    # the queued task is done by the next mesh (or already was), never lost
    spawn(run, "research")
    assert result_of(run, "t2")["status"] == "ok"
    down(run)
    again = down(run)
    assert again.records == [dict(again.records[0], kind="down", stopped=0, nothing=True)]


def test_a_running_task_is_handed_back_and_the_next_worker_finishes_it(run, mesh, tmp_path):
    spawn(run, "builder")
    release = tmp_path / "release"
    run("queue-push", "--role", "builder", "--id", "slow",
        f"while [ ! -e {release} ]; do sleep 0.05; done; echo finished", check=0)
    wait_running("builder-1", "slow")
    records = down(run, "--timeout", "0").records
    assert records[0] == dict(records[0], kind="stop", name="builder-1", how="handed back",
                              task="slow")
    assert records[-1]["handed_back"] == ["slow"]
    assert mesh_processes(mesh) == []
    assert run("queue-results", "--task", "slow", check=0).records == []
    spawn(run, "builder")  # the next mesh
    wait_running("builder-1", "slow")
    release.touch()
    assert result_of(run, "slow") == dict(result_of(run, "slow"), status="ok",
                                          output="finished\n")
    down(run)


def test_down_of_a_booted_mesh_loses_no_task_and_the_next_init_finishes_them(run, mesh,
                                                                              tmp_path):
    """The issue's round trip with the porcelain: meshctl init, a task running and one
    queued, meshctl down: nothing of the mesh left in /proc, no task lost; meshctl init
    again and both finish."""
    init = ("meshctl", "init", "--agent", "shell", "--roles", "builder", "--json")
    run(*init, check=0, timeout=120)
    release = tmp_path / "release"
    run("queue-push", "--role", "builder", "--id", "slow",
        f"while [ ! -e {release} ]; do sleep 0.05; done; echo finished", check=0)
    wait_running("builder-1", "slow")
    run("queue-push", "--role", "builder", "--id", "queued", "echo queued", check=0)
    records = down(run, "--timeout", "0").records
    assert records[-1]["handed_back"] == ["slow"]
    assert mesh_processes(mesh) == []
    assert registry.all_sessions(MeshHome.find()) == []
    assert run("queue-results", "--json", check=0).records == []
    release.touch()
    run(*init, check=0, timeout=120)
    assert result_of(run, "slow")["status"] == "ok"
    assert result_of(run, "queued")["output"] == "queued\n"
    down(run, "--all")
    assert mesh_processes(mesh) == []


def test_a_running_task_finishes_within_the_timeout(run, mesh, tmp_path):
    spawn(run, "builder")
    release = tmp_path / "release"
    run("queue-push", "--role", "builder", "--id", "slow",
        f"while [ ! -e {release} ]; do sleep 0.05; done; echo finished", check=0)
    wait_running("builder-1", "slow")
    stopping = subprocess.Popen(["meshctl", "down", "--json", "--timeout", "60"],
                                stdout=subprocess.PIPE, text=True)
    state = mesh / "spawns" / "builder-1.json"
    wait_until(lambda: json.loads(state.read_text())["state"] == "stopping", timeout=30)
    release.touch()  # the task ends after the stop reached its worker
    out, _ = stopping.communicate(timeout=60)
    assert stopping.returncode == 0
    assert '"how":"stopped"' in out and '"handed_back":[]' in out
    assert result_of(run, "slow")["status"] == "ok"
    assert mesh_processes(mesh) == []


def test_what_ignores_the_stop_is_killed_with_all_below_it(run, mesh):
    """A supervised command that ignores SIGTERM: killed KILL_AFTER seconds after the
    timeout, supervisor and all; its session, which it could not leave, is unregistered."""
    supervisor = subprocess.Popen(
        ["mesh-supervise", "--role", "builder", "--session", "builder-3", "--", "sh", "-c",
         "trap '' TERM; sleep 600 & wait; wait"], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        state = mesh / "spawns" / "builder-3.json"
        wait_until(lambda: state.exists() and json.loads(state.read_text())["state"] == "running")
        below = [p.pid for p in psutil.Process(supervisor.pid).children(recursive=True)]
        records = down(run, "--timeout", "0").records
    finally:
        supervisor.wait(timeout=30)
    assert records[0] == dict(records[0], name="builder-3", how="killed")
    assert records[-1]["killed"] == 1 and not records[-1]["not_stopped"]
    assert len(below) == 2 and not any(proc.is_alive(pid) for pid in below)
    assert registry.all_sessions(MeshHome.find()) == [] and mesh_processes(mesh) == []
    left = [e for e in map(json.loads, (mesh / "events.jsonl").read_text().splitlines())
            if e["event"] == "session.unregistered"]
    assert [(e["id"], e["reason"]) for e in left] == [("builder-3", "mesh down")]


def test_down_all_stops_the_embedded_redis_but_not_an_external_one(run, mesh):
    spawn(run, "builder")
    redis = EmbeddedRedis(MeshHome(str(mesh))).pid()
    external = down(run, "--all", "--redis-url", "unix:///nowhere/redis.sock").records
    assert external[-2] == dict(external[-2], name="redis", how="left running")
    assert proc.is_alive(redis)
    records = down(run, "--all").records
    assert records[0] == dict(records[0], name="redis", pid=redis, how="stopped")
    assert proc.is_alive(redis) is False and mesh_processes(mesh) == []
    assert down(run, "--all").records[-1]["nothing"] is True


def test_a_process_the_records_do_not_prove_is_never_signalled(run, mesh, anchor_process):
    """A recycled pid (right pid, wrong start time) in a supervisor's state, a session and
    anchor.lock; a live session the mesh did not start; one on another host."""
    home = MeshHome(str(mesh))
    stranger, shell, remote = anchor_process(), anchor_process(), anchor_process()
    wrong = proc.start_time(stranger.pid) + 1
    home.ensure(home.spawns)
    (mesh / "spawns" / "builder-9.json").write_text(
        f'{{"key": "builder-9", "session": "builder-9", "supervisor_pid": {stranger.pid}, '
        f'"supervisor_start": {wrong}, "host": "{proc.hostname()}"}}')
    registry.register(home, "builder", "builder-9", stranger.pid)
    record = registry.get(home, "builder-9")
    (mesh / "sessions" / "builder-9" / "session.json").write_text(
        json.dumps(dict(record, pid_start=wrong)))
    run("coord-register", "--role", "research", "--id", "research-5", "--pid", str(shell.pid),
        check=0)
    registry.register(home, "memory", "memory-7", remote.pid)
    record = registry.get(home, "memory-7")
    (mesh / "sessions" / "memory-7" / "session.json").write_text(
        json.dumps(dict(record, host="elsewhere")))
    with open(home.anchor_lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(f"{stranger.pid} {wrong} {proc.hostname()}\n")
        lock.flush()
        result = down(run, check=75)
    assert result.stderr == "meshctl: could not stop: memory-7\n"
    by_name = {r["name"]: r for r in result.records if r["kind"] == "stop"}
    assert by_name["builder-9"]["how"] == "unregistered"  # its pid is not its process
    assert by_name["research-5"]["how"] == "left running"
    assert by_name["memory-7"] == dict(by_name["memory-7"], how="not stopped",
                                       why="on host elsewhere, not signalled")
    assert "anchor" not in by_name
    for p in (stranger, shell, remote):
        assert p.poll() is None  # none was signalled
    assert {r["id"] for r in registry.all_sessions(home)} == {"research-5", "memory-7"}


def test_on_a_terminal_a_line_per_process_and_a_summary(run, mesh):
    import re

    pid = spawn(run, "builder")["pid"]
    code, shown, err = on_terminal(["meshctl", "down"])
    assert (code, err) == (0, "")
    lines = shown.splitlines()
    assert lines[0] == f"stopping 1 process(es) of {mesh}; a running task has 30s to finish"
    assert re.fullmatch(rf"✔ builder-1 pid {pid} stopped \(\d+\.\ds\)", lines[1])
    assert re.fullmatch(r"✔ mesh down in \d+\.\ds: 1 stopped", lines[2]) and len(lines) == 3
    assert on_terminal(["meshctl", "down"]) == (0, "✔ nothing runs\r\n", "")


# --- the pure decisions ---------------------------------------------------------------------

def test_plan_stops_supervisors_and_a_standalone_anchor_only():
    states = [{"key": "builder-1", "session": "builder-1", "supervisor_pid": 10,
               "supervisor_start": 1, "alive": True},
              {"key": "pid-30", "session": None, "supervisor_pid": 30, "supervisor_start": 3,
               "alive": False}]
    sessions = [{"id": "builder-1", "role": "builder", "pid": 10, "pid_start": 1, "alive": True},
                {"id": "research-1", "role": "research", "pid": 20, "pid_start": 2,
                 "alive": True},
                {"id": "memory-1", "role": "memory", "pid": 40, "pid_start": 4, "alive": True},
                {"id": "anchor-1", "role": "anchor", "pid": 50, "pid_start": 5, "alive": False}]
    anchor = {"pid": 60, "pid_start": 6, "host": "h", "alive": True, "ancestors": [1]}
    plan = stop.plan(states, sessions, {"research-1": 20}, anchor)
    assert [(t.name, t.kind, t.pid, t.role) for t in plan["stop"]] == [
        ("builder-1", "supervisor", 10, "builder"), ("research-1", "supervisor", 20, "research"),
        ("anchor", "anchor", 60, None)]
    assert plan["dead"] == ["anchor-1"]
    assert [(r["name"], r["how"]) for r in plan["left"]] == [("memory-1", "left running")]
    remote = [{"key": "triage-1", "session": "triage-1", "supervisor_pid": 70, "host": "b",
               "supervisor_start": 7, "alive": None}]
    session = {"id": "triage-1", "role": "triage", "pid": 70, "pid_start": 7, "host": "b",
               "alive": None}
    assert stop.plan(remote, [session], {}, None)["left"] == [{
        "kind": "stop", "name": "triage-1", "role": "triage", "pid": 70, "host": "b",
        "how": "not stopped", "why": "on host b, not signalled"}]  # one process, said once
    below = dict(anchor, ancestors=[10, 1])  # run by builder-1's supervisor: stopped with it
    assert [t.name for t in stop.plan(states, sessions, {}, below)["stop"]] == ["builder-1"]


@pytest.mark.parametrize("kind, elapsed, since_last, timeout, due", [
    ("supervisor", 1.0, 1.0, 30.0, None),  # finishing its task
    ("supervisor", 30.0, 30.0, 30.0, signal.SIGTERM),  # the timeout: hand it back
    ("supervisor", 30.1, 0.1, 30.0, None),  # just sent
    ("supervisor", 0.3, 0.3, 0.0, signal.SIGTERM),  # --timeout 0: again at once
    ("anchor", 31.0, 31.0, 30.0, None),  # the anchor is sent one SIGTERM
    ("anchor", 35.0, 35.0, 30.0, signal.SIGKILL),
    ("supervisor", 5.0, 0.3, 0.0, signal.SIGKILL),
])
def test_escalate(kind, elapsed, since_last, timeout, due):
    assert stop.escalate(kind, elapsed, since_last, timeout) == due


def test_describe():
    target = stop.Target("builder-1", "supervisor", 12, 1, seconds=0.42)
    assert stop.describe(stop.outcome(target, gone=True)) == "✔ builder-1 pid 12 stopped (0.4s)"
    target.handed_back = "t1"
    assert stop.describe(stop.outcome(target, gone=True)) == (
        "✔ builder-1 pid 12 stopped, task t1 handed back (0.4s)")
    target.killed, target.seconds = True, 5.2
    assert stop.describe(stop.outcome(target, gone=True)) == "✔ builder-1 pid 12 killed after 5s"
    assert stop.describe(stop.summarise([], 0.01)) == "✔ nothing runs"
    summary = stop.summarise([stop.outcome(target, gone=True),
                              stop.outcome(target, gone=False)], 1.26)
    assert stop.describe(summary) == "✘ mesh down in 1.3s: 1 stopped, not stopped: builder-1"


def test_down_all_never_signals_a_recycled_redis_pid(run, mesh, anchor_process):
    """A killed server's pid file stays; its pid may be another process's by now."""
    embedded = EmbeddedRedis(MeshHome(str(mesh)))
    server = embedded.pid()
    os.kill(server, signal.SIGKILL)
    wait_until(lambda: not proc.is_alive(server))
    stranger = anchor_process()
    (mesh / "redis" / "redis.pid").write_text(f"{stranger.pid}\n")
    assert down(run, "--all").records[-1]["nothing"] is True
    assert stranger.poll() is None


def supervisor_state(mesh_home, key):
    path = mesh_home / "spawns" / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):  # not there, or being replaced
        return {}


INIT_RESEARCH = ("meshctl", "init", "--agent", "shell", "--roles", "research,-anchor", "--json")


def test_an_init_while_down_runs_starts_nothing(run, mesh, tmp_path):
    """down waits for a task to finish; an init meanwhile is refused (75), never left
    running beside a down that has read its records already."""
    spawn(run, "builder")
    release = tmp_path / "release"
    run("queue-push", "--role", "builder", "--id", "slow",
        f"while [ ! -e {release} ]; do sleep 0.05; done", check=0)
    wait_running("builder-1", "slow")
    stopping = subprocess.Popen(["meshctl", "down", "--all", "--json", "--timeout", "120"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: supervisor_state(mesh, "builder-1").get("state") == "stopping",
                   timeout=30)
        init = run(*INIT_RESEARCH, timeout=120)
        spawned = run("mesh-spawn", "research", "--queue", "--agent", "shell", "--detach")
        supervised = run("mesh-supervise", "--role", "research", "--", "sleep", "600")
        anchor = run("mesh-anchor", "--once")
        release.touch()
        out, err = stopping.communicate(timeout=120)
    finally:
        release.touch()
    assert stopping.returncode == 0, err
    for refused in (init, spawned, supervised, anchor):
        assert refused.returncode == 75 and "meshctl down is stopping the mesh" in refused.stderr
    assert mesh_processes(mesh) == [] and EmbeddedRedis(MeshHome(str(mesh))).pid() is None


def test_down_racing_init_leaves_nothing_running(run, mesh):
    """down while init boots (its worktrees made, its supervisors starting): down waits for
    the boot, then stops all it started. After down returns nothing of the mesh runs."""
    for _ in range(3):
        init = subprocess.Popen(INIT_RESEARCH, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for_output(init.stdout, '"step":"worktree"', timeout=60)
            stopped = down(run, "--all")
            init.communicate(timeout=120)
            assert mesh_processes(mesh) == [], stopped.records
            assert EmbeddedRedis(MeshHome(str(mesh))).pid() is None
        finally:
            if init.poll() is None:
                init.kill()
                init.wait()
