"""A task's processes live and die with the task, and with its worker: the timeout is the
task's own process's, a process that escaped with setsid holds neither the task nor the
worker, and a kill -9 of the worker takes the task down (issues #3, #4)."""

import json
import signal
import subprocess

from meshtools.core import proc

from .helpers import drain, pending, redis_of, wait_for_output, wait_until


def gone(pid: int) -> bool:
    return proc.start_time(pid) is None  # no such process, or a zombie about to be reaped


def pids(*files) -> list[int]:
    return [int(f.read_text()) for f in files]


def test_a_timeout_stops_a_task_whose_escapee_holds_its_output(run, tmp_path):
    """It used to wait for EOF on the output: the escapee's whole life."""
    escapee = tmp_path / "escapee.pid"
    run("queue-push", "--id", "esc", "--timeout", "1", "--max-attempts", "1",
        f"setsid sleep 300 & echo $! > {escapee}; sleep 100", check=0)
    [result] = run("queue-drain", "--burst", check=0, timeout=30).records
    assert result["status"] == "timeout"
    wait_until(lambda: gone(*pids(escapee)))  # the task's escapees end with it


def test_a_task_that_exits_at_once_is_done_at_once(run, tmp_path):
    """`setsid sleep 300 & echo started` exits 0 at once: ok, not a timeout 300 s later."""
    escapee = tmp_path / "escapee.pid"
    run("queue-push", "--id", "quick", "--timeout", "200",
        f"setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $! > {escapee}; echo started",
        check=0)
    run("queue-push", "--id", "holder", "--timeout", "200",
        "setsid sleep 300 & echo started", check=0)  # the escapee keeps stdout open
    results = {r["id"]: r for r in run("queue-drain", "--burst", check=0, timeout=30).records}
    assert {k: (r["status"], r["output"]) for k, r in results.items()} == {
        "quick": ("ok", "started\n"), "holder": ("ok", "started\n")}
    wait_until(lambda: gone(*pids(escapee)))


def test_sigterm_is_heard_while_an_escapee_holds_the_output(run, mesh_home, tmp_path):
    """First SIGTERM: the task finishes, then the worker exits."""
    run("queue-push", "--id", "finishing", "setsid sleep 300 & sleep 1; echo finished",
        check=0)
    worker = drain(capture=True)
    wait_until(lambda: pending(mesh_home) == 1)
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 128 + signal.SIGTERM and json.loads(out)["output"] == "finished\n"


def test_a_second_sigterm_stops_a_task_that_ignores_sigterm(run, mesh_home, tmp_path):
    escapee = tmp_path / "escapee.pid"
    run("queue-push", "--id", "stubborn",
        f"trap '' TERM; setsid sleep 300 & echo $! > {escapee}; sleep 300", check=0)
    worker = drain(capture=True)
    wait_until(lambda: pending(mesh_home) == 1 and escapee.exists())
    worker.send_signal(signal.SIGTERM)
    wait_for_output(worker.stderr, "SIGTERM again")  # heard: two at once would be one
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=30)
    assert worker.returncode == 128 + signal.SIGTERM
    assert redis_of(mesh_home).hget("tasks:index", "stubborn") == "queued"  # handed back
    wait_until(lambda: gone(*pids(escapee)))


def test_kill_9_of_the_worker_takes_its_task_down(run, mesh_home, tmp_path):
    """Every process of the task: its shell, a background job, a setsid'd escapee."""
    shell, job, escapee = (tmp_path / n for n in ("shell.pid", "job.pid", "escapee.pid"))
    run("queue-push", "--id", "orphan",
        f"echo $$ > {shell}; sleep 301 & echo $! > {job}; "
        f"setsid sleep 302 & echo $! > {escapee}; sleep 300; echo never", check=0)
    worker = subprocess.Popen(["queue-drain"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_until(lambda: all(f.exists() and f.read_text().strip() for f in (shell, job, escapee)))
    task = pids(shell, job, escapee)
    assert not any(gone(pid) for pid in task)
    worker.kill()
    worker.wait()
    wait_until(lambda: all(gone(pid) for pid in task))


def test_the_meshs_own_daemons_outlive_the_task_that_started_them(run, tmp_path):
    """A task that starts the mesh's Redis on first need (or spawns a detached peer) must not
    take it down when it ends: those are the mesh's daemons (MESH_DAEMON=1), not escapees."""
    from meshtools.core.home import MeshHome
    from meshtools.queue.server import EmbeddedRedis

    other = EmbeddedRedis(MeshHome(str(tmp_path / "other-mesh")))
    daemon, escapee = tmp_path / "daemon.pid", tmp_path / "escapee.pid"
    run("queue-push", "--id", "starter", "--max-attempts", "1",
        f"MESH_HOME={other.home.path} mesh-redis start >/dev/null && "
        f"{{ MESH_DAEMON=1 setsid sleep 300 & echo $! > {daemon}; }} && "
        # its mark is in its environment once it has exec'd; a task that ends before that
        # leaves a forked shell, rightly no daemon (a busy machine showed it): wait for it
        f"until grep -qa MESH_DAEMON=1 /proc/$(cat {daemon})/environ; do sleep 0.01; done && "
        f"{{ setsid sleep 301 & echo $! > {escapee}; }} && echo "
        f"\"$MESH_DAEMON\"", check=0)
    try:
        [result] = run("queue-drain", "--burst", check=0, timeout=60,
                       env={"MESH_DAEMON": "1"}).records  # the task never inherits the mark
        assert result["status"] == "ok" and result["output"] == "\n"
        wait_until(lambda: gone(*pids(escapee)))  # an escapee still ends with its task
        assert other.pid() is not None and not gone(*pids(daemon))
    finally:
        other.stop()
        for pid in pids(daemon):
            if not gone(pid):
                proc.signal_all([(pid, proc.start_time(pid))], signal.SIGKILL)
