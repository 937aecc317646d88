"""mesh-supervise: the backoff policy (pure), then real supervisors over real children.

Delays are checked from the spawn.restart events (the supervisor computes them), never from
the wall clock.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from meshtools.agents.supervisor import (DONE, FATAL, ON_FAILURE, RESTART, Decision,
                                         RestartPolicy, backoff_delay, decide_restart)
from meshtools.coord import registry
from meshtools.core import proc
from meshtools.core.home import MeshHome

from .helpers import wait_until

FAST = ["--base", "0.05", "--cap", "1", "--min-uptime", "2", "--max-failures", "4"]


def events(mesh_home, name=None):
    path = mesh_home / "events.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if name is None or r["event"] == name]


def gone(pid: int) -> bool:
    return proc.start_time(pid) is None  # no such process, or a zombie nobody reaped yet


def state(mesh_home, key):
    path = mesh_home / "spawns" / f"{key}.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def supervise():
    """Start mesh-supervise in the background; kill whatever is left at the end."""
    started = []

    def _start(*args):
        p = subprocess.Popen(["mesh-supervise", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        started.append(p)
        return p

    yield _start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.communicate()


def running(mesh_home, key, spawn=None):
    """Wait for the supervisor of key to run a child (another than `spawn`); its state."""
    wait_until(lambda: (state(mesh_home, key) or {}).get("state") == "running"
               and state(mesh_home, key)["spawn"] != spawn)
    return state(mesh_home, key)


# --- the pure policy ---------------------------------------------------------------------

def test_backoff_is_quadratic_and_capped():
    assert [backoff_delay(n, 1.0, 60.0) for n in range(0, 10)] == \
        [0, 1, 4, 9, 16, 25, 36, 49, 60, 60]
    assert backoff_delay(3, 0.5, 100) == 4.5


def test_rapid_failures_grow_until_fatal():
    policy = RestartPolicy(base=1, cap=10, min_uptime=10, max_rapid_failures=5)
    n, delays = 0, []
    while True:
        d = decide_restart(policy, n, uptime=0.1, exit_code=3)
        if d.action == FATAL:
            break
        assert d.action == RESTART
        n = d.n
        delays.append(d.delay)
    assert delays == [1, 4, 9, 10] and d.n == 5


def test_a_stable_run_resets_the_count():
    policy = RestartPolicy(base=1, cap=60, min_uptime=10, max_rapid_failures=5)
    assert decide_restart(policy, 4, uptime=10.0, exit_code=1) == decide_restart(policy, 0, 99, 1)
    d = decide_restart(policy, 4, uptime=10.0, exit_code=1)
    assert (d.action, d.n, d.delay) == (RESTART, 0, 0)
    assert decide_restart(policy, 4, uptime=9.9, exit_code=1).action == FATAL


def test_exit_zero_ends_on_failure_but_is_a_rapid_failure_under_always():
    assert decide_restart(RestartPolicy(restart=ON_FAILURE), 3, 0.1, 0).action == DONE
    d = decide_restart(RestartPolicy(), 0, 0.1, 0)
    assert (d.action, d.n, d.delay) == (RESTART, 1, 1.0)
    with pytest.raises(ValueError):
        RestartPolicy(restart="sometimes").check()


def test_a_persistent_agent_reruns_after_a_clean_exit_without_counting_it():
    policy = RestartPolicy(rerun_delay=30.0)
    assert decide_restart(policy, 3, 0.1, 0) == Decision(RESTART, 0, 30.0)
    assert decide_restart(policy, 3, 0.1, 1) == Decision(RESTART, 4, 16.0)  # a crash still counts


# --- real supervisors --------------------------------------------------------------------

def test_a_finished_run_waiting_for_its_next_is_not_called_a_backoff(supervise, mesh_home):
    """A persistent agent's clean exit showed as phase "backoff 300s" in coord-peers, as if
    it had failed."""
    sup = supervise("--role", "memory", "--session", "m1", "--rerun-delay", "300", "--",
                    "true")
    home = MeshHome(str(mesh_home))
    wait_until(lambda: (registry.get(home, "m1") or {}).get("phase") == "next run in 300s")
    sup.terminate()
    assert sup.wait(timeout=30) == 143


def test_crash_loop_backs_off_then_goes_fatal(run, mesh_home):
    result = run("mesh-supervise", *FAST, "--role", "builder", "--session", "b1", "--",
                 "sh", "-c", "exit 3", timeout=30)
    assert result.returncode == 75
    assert result.stderr == "mesh-supervise: gave up: 4 rapid failures (last exit 3)\n"
    restarts = events(mesh_home, "spawn.restart")
    assert [r["n"] for r in restarts] == [1, 2, 3]
    assert [r["delay"] for r in restarts] == pytest.approx([0.05, 0.2, 0.45])
    assert [r["code"] for r in events(mesh_home, "spawn.exited")] == [3, 3, 3, 3]
    assert len({r["spawn"] for r in events(mesh_home, "spawn.started")}) == 4
    fatal = events(mesh_home, "spawn.fatal")
    assert len(fatal) == 1 and fatal[0]["failures"] == 4 and fatal[0]["code"] == 3
    record = registry.get(MeshHome(str(mesh_home)), "b1")
    assert record["phase"] == "FATAL" and record["pid"] == int(
        events(mesh_home, "session.registered")[0]["pid"])
    printed = result.records  # stdout is a pipe: one JSON record per spawn event
    assert {r["kind"] for r in printed} == {"spawn"}
    assert [r["event"] for r in printed].count("started") == 4
    assert not (mesh_home / "spawns" / "b1.json").exists()


def test_a_child_that_ran_long_enough_keeps_the_count_reset(run, mesh_home, tmp_path):
    counter = tmp_path / "count"
    script = (f'n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; '
              'sleep 0.3; [ $n -ge 4 ] && exit 0; exit 1')
    result = run("mesh-supervise", "--base", "5", "--min-uptime", "0.2", "--max-failures", "2",
                 "--restart", "on-failure", "--", "sh", "-c", script, timeout=30)
    assert result.returncode == 0, result.stderr
    assert counter.read_text().strip() == "4"
    restarts = events(mesh_home, "spawn.restart")
    assert [(r["n"], r["delay"]) for r in restarts] == [(0, 0), (0, 0), (0, 0)]
    assert [r["code"] for r in events(mesh_home, "spawn.exited")] == [1, 1, 1, 0]
    assert not events(mesh_home, "spawn.fatal")
    assert events(mesh_home, "spawn.stopped")[0]["reason"] == "exited"


def test_sigterm_leaves_no_process_behind(supervise, mesh_home, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    sup = supervise("--", "sh", "-c", f"sleep 1000 & echo $! > {pidfile}; wait")
    child = running(mesh_home, f"pid-{sup.pid}")["child_pid"]
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip())
    grandchild = int(pidfile.read_text())
    assert not gone(child) and not gone(grandchild)
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=20) == 143
    wait_until(lambda: gone(child) and gone(grandchild))
    stopped = events(mesh_home, "spawn.stopped")
    assert stopped[0]["signal"] == "SIGTERM" and stopped[0]["code"] == 143
    assert not (mesh_home / "spawns" / f"pid-{sup.pid}.json").exists()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(supervise, mesh_home, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    sup = supervise("--grace", "0.3", "--", "sh", "-c",
                    f"trap '' TERM; sleep 1000 & echo $! > {pidfile}; wait; wait")
    child = running(mesh_home, f"pid-{sup.pid}")["child_pid"]
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip())
    grandchild = int(pidfile.read_text())
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=20) == 128 + signal.SIGKILL
    wait_until(lambda: gone(child) and gone(grandchild))


# A job in a process group of its own (as a job-control shell makes it), in the same session;
# its pid goes to argv[1]. It holds no pipe of the test's open.
OWN_GROUP_JOB = ("import subprocess, sys; p = subprocess.Popen(['sleep', '1000'], "
                 "process_group=0, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
                 "open(sys.argv[1] + '.tmp', 'w').write(str(p.pid)); "
                 "__import__('os').rename(sys.argv[1] + '.tmp', sys.argv[1])")


def test_a_job_that_left_the_group_is_stopped_too(supervise, mesh_home, tmp_path):
    pidfile = tmp_path / "job.pid"
    sup = supervise("--", "sh", "-c", f"{sys.executable} -c \"{OWN_GROUP_JOB}\" {pidfile}; "
                                      "exec sleep 1000")
    running(mesh_home, f"pid-{sup.pid}")
    wait_until(pidfile.exists)
    job = int(pidfile.read_text())
    assert os.getpgid(job) == job and os.getsid(job) != job  # its own group, not session
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=20) == 143
    wait_until(lambda: gone(job))


def test_an_orphaned_job_dies_with_the_run_that_started_it(supervise, mesh_home, tmp_path):
    """Its parent gone, the job is re-parented to the supervisor (a subreaper) and stopped
    when that run ends, before the restart."""
    pidfile = tmp_path / "job.pid"
    sup = supervise(*FAST, "--", "sh", "-c",
                    f"[ -e {pidfile} ] && exec sleep 1000; "
                    f"{sys.executable} -c \"{OWN_GROUP_JOB}\" {pidfile}; sleep 0.3; exit 1")
    key = f"pid-{sup.pid}"
    first = running(mesh_home, key)
    wait_until(pidfile.exists)
    job = int(pidfile.read_text())
    second = running(mesh_home, key, spawn=first["spawn"])
    wait_until(lambda: gone(job))
    assert not gone(second["child_pid"])
    # found through /proc: the long-lived supervisor never loads psutil (1.5 MB) for it
    assert "_psutil" not in (open(f"/proc/{sup.pid}/maps").read())
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=20) == 143


def test_a_daemon_with_a_session_of_its_own_is_left_alone(supervise, mesh_home, tmp_path):
    """setsid is a process's own choice to outlive its parent (a tmux server, the mesh's
    Redis, a detached peer): the run's end does not touch it."""
    pidfile = tmp_path / "daemon.pid"
    sup = supervise("--", "sh", "-c", f"setsid sleep 1000 >/dev/null 2>&1 & echo $! > "
                                      f"{pidfile}.tmp; mv {pidfile}.tmp {pidfile}; wait")
    running(mesh_home, f"pid-{sup.pid}")
    wait_until(pidfile.exists)
    daemon = int(pidfile.read_text())
    try:
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=20) == 143
        assert not gone(daemon)
    finally:
        os.kill(daemon, signal.SIGKILL)


def test_sigterm_during_backoff_ends_it_at_once(supervise, mesh_home):
    sup = supervise("--base", "300", "--cap", "300", "--", "sh", "-c", "exit 5")
    wait_until(lambda: events(mesh_home, "spawn.restart"))
    assert events(mesh_home, "spawn.restart")[0]["delay"] == 300
    cpu = psutil.Process(sup.pid).cpu_times()
    time.sleep(1)  # backing off: it sleeps between polls, never spins
    later = psutil.Process(sup.pid).cpu_times()
    assert (later.user + later.system) - (cpu.user + cpu.system) < 0.5
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=20) == 143
    assert len(events(mesh_home, "spawn.started")) == 1


def test_a_deleted_mesh_home_stops_the_supervisor_and_its_child(supervise, mesh_home):
    """issue 8: a leftover supervisor of a mesh whose state directory is gone stops, says
    why, and does not make the directory again."""
    sup = supervise("--", "sleep", "1000")
    child = running(mesh_home, f"pid-{sup.pid}")["child_pid"]
    shutil.rmtree(mesh_home.rename(mesh_home.with_name("deleted")))  # no writer races it
    assert sup.wait(timeout=30) == 78
    wait_until(lambda: gone(child))
    assert "was deleted or replaced" in sup.stderr.read()
    assert not mesh_home.exists(), sorted(str(p) for p in mesh_home.rglob("*"))


def _mesh_redis(mesh_home) -> int:
    """Start the mesh's embedded Redis; its pid."""
    from meshtools.queue.server import EmbeddedRedis

    from .helpers import redis_of

    redis_of(mesh_home).ping()
    return EmbeddedRedis(MeshHome(str(mesh_home))).pid()


def test_a_deleted_mesh_homes_redis_is_stopped_with_its_supervisor(supervise, mesh_home):
    """The supervisor stopped, but the gone mesh's redis-server ran on for ever: its socket
    and password were deleted with MESH_HOME, so nothing could reach or stop it."""
    redis = _mesh_redis(mesh_home)
    try:
        sup = supervise("--", "sleep", "1000")
        running(mesh_home, f"pid-{sup.pid}")
        shutil.rmtree(mesh_home.rename(mesh_home.with_name("deleted")))
        assert sup.wait(timeout=30) == 78
        wait_until(lambda: gone(redis))
    finally:
        if not gone(redis):
            os.kill(redis, signal.SIGKILL)


def test_init_after_deleting_mesh_home_stops_the_old_redis(run, mesh_home):
    redis = _mesh_redis(mesh_home)
    try:
        shutil.rmtree(mesh_home)
        run("meshctl", "init", "--no-agents", check=0)
        wait_until(lambda: gone(redis))
    finally:
        if not gone(redis):
            os.kill(redis, signal.SIGKILL)


def test_a_replaced_mesh_home_stops_the_supervisor_during_backoff(supervise, mesh_home):
    sup = supervise("--base", "300", "--cap", "300", "--", "sh", "-c", "exit 5")
    wait_until(lambda: events(mesh_home, "spawn.restart"))
    shutil.rmtree(mesh_home.rename(mesh_home.with_name("deleted")))  # no writer races it
    mesh_home.mkdir()  # another mesh at the same path is not this supervisor's
    assert sup.wait(timeout=30) == 78
    assert not (mesh_home / "events.jsonl").exists()


def test_a_stale_control_never_touches_a_newer_spawn(supervise, run, mesh_home, tmp_path):
    seen = tmp_path / "spawn-ids"
    sup = supervise("--", "sh", "-c", f'echo "$MESH_SPAWN_ID" >> {seen}; exec sleep 1000')
    key = f"pid-{sup.pid}"
    first = running(mesh_home, key)
    assert first["supervisor_pid"] == sup.pid and first["pgid"] == first["child_pid"]
    wait_until(lambda: seen.exists() and seen.read_text().strip() == first["spawn"])

    sent = run("mesh-supervise", "--restart-child", key, "--spawn", first["spawn"], check=0)
    assert sent.records[0]["control"] == "restart" and sent.records[0]["current"] is True
    second = running(mesh_home, key, spawn=first["spawn"])
    wait_until(lambda: gone(first["child_pid"]))

    stale = run("mesh-supervise", "--stop", key, "--spawn", first["spawn"], check=0)
    assert stale.records[0]["current"] is False
    wait_until(lambda: events(mesh_home, "spawn.control_ignored"))
    ignored = events(mesh_home, "spawn.control_ignored")[0]
    assert ignored["spawn"] == first["spawn"] and ignored["current"] == second["spawn"]
    assert sup.poll() is None and not gone(second["child_pid"])
    assert not os.listdir(mesh_home / "spawns" / f"{key}.control")  # the stale one is gone

    now = run("mesh-supervise", "--stop", key, check=0)  # no --spawn: the current one
    assert now.records[0]["spawn"] == second["spawn"] and now.records[0]["current"] is True
    assert sup.wait(timeout=20) == 143
    wait_until(lambda: gone(second["child_pid"]))
    assert seen.read_text().split() == [first["spawn"], second["spawn"]]


def test_the_registered_session_is_the_supervisor(supervise, run, mesh_home):
    sup = supervise("--role", "builder", "--session", "b7", "--", "sleep", "1000")
    running(mesh_home, "b7")
    peers = run("coord-peers", check=0).records
    assert [(p["id"], p["pid"], p["phase"], p["state"]) for p in peers] == \
        [("b7", sup.pid, "running", "alive")]
    # the same pid, now a lean interpreter running only the supervisor (no click)
    cmdline = open(f"/proc/{sup.pid}/cmdline").read().split("\0")
    assert "from meshtools.agents.supervisor import main; main()" in cmdline
    assert "mesh-supervise" in cmdline
    assert run("mesh-supervise", "--role", "builder", "--session", "b7", "--", "true"
               ).returncode == 75  # the id is live
    sup.send_signal(signal.SIGINT)
    assert sup.wait(timeout=20) == 130
    assert registry.get(MeshHome(str(mesh_home)), "b7") is None  # a clean stop unregisters


def test_a_stop_during_the_handoff_is_held_then_obeyed(mesh_home):
    """SIGTERM sent the moment the session is registered, while the process is still
    becoming the lean supervisor: held over the exec, then a clean stop that unregisters."""
    home = MeshHome(str(mesh_home))
    sup = subprocess.Popen(["mesh-supervise", "--role", "builder", "--session", "h1", "--",
                            "sleep", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    wait_until(lambda: registry.get(home, "h1") is not None, timeout=20)
    sup.send_signal(signal.SIGTERM)
    _, err = sup.communicate(timeout=20)
    assert sup.returncode == 143, err
    assert registry.get(home, "h1") is None  # stopped by its handler, not killed
    stopped = events(mesh_home, "spawn.stopped")
    assert stopped and stopped[0]["signal"] == "SIGTERM"


def test_modules_in_the_working_directory_never_shadow_the_supervisor(run, tmp_path,
                                                                     monkeypatch):
    """An agent's worktree is anyone's repository: a json.py or select.py at its top must not
    be imported in place of the standard library's by the lean supervisor (python -P)."""
    for name in ("json", "select", "fcntl"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('shadowed stdlib')\n")
    monkeypatch.chdir(tmp_path)
    result = run("mesh-supervise", "--restart", "on-failure", "--", "true")
    assert result.returncode == 0, result.stderr
    assert "shadowed" not in result.stderr


@pytest.mark.parametrize("argv, code, message", [
    ([], 64, "no command"),
    (["--stop", "pid-1"], 65, "no supervisor for pid-1"),
    (["--spawn", "abc"], 64, "--spawn goes with"),
    (["--stop", "pid-1", "--spawn", "abc", "--", "true"], 64, "take no command"),
    (["--stop", "nobody", "--spawn", "abc"], 65, "no supervisor for nobody"),
    (["--stop", "../x", "--spawn", "abc"], 65, "invalid spawn key"),
    (["--stop", "k", "--spawn", "XYZ"], 65, "invalid spawn id"),
    (["--session", "ghost", "--", "true"], 65, "unknown session ghost"),
    (["--", "/no/such/command"], 127, "command not found"),
])
def test_bad_input_is_one_line(run, argv, code, message):
    result = run("mesh-supervise", *argv)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert result.stderr.startswith("mesh-supervise: ")


def test_help(run):
    assert run("mesh-supervise", "--help", check=0).stdout.startswith("Usage: mesh-supervise")


def test_an_exception_in_the_supervisor_still_kills_the_group(supervise, mesh_home, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    sup = supervise("--", "sh", "-c", f"sleep 1000 & echo $! > {pidfile}; wait")
    key = f"pid-{sup.pid}"
    child = running(mesh_home, key)["child_pid"]
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip())
    grandchild = int(pidfile.read_text())
    control = mesh_home / "spawns" / f"{key}.control"
    control.rmdir()
    control.write_text("in the way")  # the next poll of the control folder raises
    assert sup.wait(timeout=20) == 70
    assert "Not a directory" in sup.stderr.read()
    wait_until(lambda: gone(child) and gone(grandchild))


def test_a_control_for_a_dead_supervisor_is_refused(supervise, run, mesh_home):
    sup = supervise("--", "sleep", "1000")
    record = running(mesh_home, f"pid-{sup.pid}")
    sup.kill()  # kill -9 cannot be caught ...
    sup.wait()
    result = run("mesh-supervise", "--stop", record["key"], "--spawn", record["spawn"])
    assert result.returncode == 69 and "is gone" in result.stderr
    wait_until(lambda: gone(record["child_pid"]))  # ... but the kernel ends its child


def test_a_full_disk_does_not_take_the_supervisor_down(mesh_home, tmp_path):
    """Its records cannot be written (ENOSPC, for real: stdout is /dev/full); it says so
    once and keeps its agent running and restarted (#6)."""
    runs = tmp_path / "runs"
    with open("/dev/full", "w") as full:
        sup = subprocess.Popen(["mesh-supervise", "--json", "--min-uptime", "0", "--",
                                "sh", "-c", f"echo run >> {runs}; sleep 0.1"],
                               stdout=full, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: runs.exists() and len(runs.read_text().split()) >= 3
                   or sup.poll() is not None)
        assert sup.poll() is None
    finally:
        sup.send_signal(signal.SIGTERM)
        _, err = sup.communicate(timeout=30)
    assert sup.returncode == 128 + signal.SIGTERM
    assert err.count("No space left on device") == 1, err
