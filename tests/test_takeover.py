"""A task never runs twice at once: a worker dies with its supervisor (kill -9 included),
and a task whose runner may still be alive (a stopped worker, a stopped task) is not taken
over until it is gone. Real supervisors, workers, signals and the stand-in `claude`."""

import json
import os
import signal
import subprocess

import psutil
import pytest

from meshtools.core import proc
from meshtools.queue.worker import BEAT_EVERY, WORKER_DEAD_AFTER

from .helpers import redis_of, wait_for_output, wait_until


def gone(pid: int) -> bool:
    return proc.start_time(pid) is None  # no such process, or a zombie nobody reaped yet


def calls(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def starts(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def results(run, task_id) -> list[dict]:
    return run("queue-results", "--task", task_id, check=0).records


def supervised_worker(tmp_path, session="builder-1"):
    """A builder's queue worker under mesh-supervise, as mesh-spawn starts one; its
    output in a file (read on failure)."""
    out = open(tmp_path / f"{session}.log", "a")
    try:
        return subprocess.Popen(["mesh-supervise", "--role", "builder", "--session", session,
                                 "--", "queue-drain", "--agent", "claude", "--queue", "builder",
                                 "--workdir", str(tmp_path)], stdout=out, stderr=out)
    finally:
        out.close()


def worker_record(mesh_home, consumer):
    raw = redis_of(mesh_home).hget("tasks:workers", consumer)
    return json.loads(raw) if raw else {}


def owner(mesh_home, queue="default") -> list[str]:
    """The consumers that hold the queue's pending entries."""
    return [p["consumer"] for p in redis_of(mesh_home).xpending_range(
        f"tasks:queue:{queue}", "mesh", min="-", max="+", count=10)]


@pytest.fixture
def started():
    """Processes a test starts; each is let go on (SIGCONT) and killed at the end."""
    procs = []
    yield procs.append
    for p in procs:
        if p.poll() is None:
            for signum in (signal.SIGCONT, signal.SIGKILL):
                p.send_signal(signum)
        p.wait()


def test_a_supervisors_kill_9_takes_its_worker_and_agent_with_it(run, claude_cli, mesh_home,
                                                                  tmp_path, started):
    """The worker hands its task back at once (nothing watches it any more); the peer
    started again under the same session runs it, once."""
    release = tmp_path / "release"
    run("queue-push", "--role", "builder", "--id", "t1",
        f"@bash while [ ! -e {release} ]; do sleep 0.05; done\nall done", check=0)
    supervisor = supervised_worker(tmp_path)
    started(supervisor)
    wait_until(lambda: calls(claude_cli), timeout=30)
    [agent] = [c["pid"] for c in calls(claude_cli)]
    state = json.loads((mesh_home / "spawns" / "builder-1.json").read_text())
    worker = state["child_pid"]
    assert state["supervisor_pid"] == supervisor.pid and not gone(worker) and not gone(agent)

    supervisor.kill()  # kill -9: nothing of its run may go on unwatched
    supervisor.wait()
    wait_until(lambda: gone(worker) and gone(agent), timeout=30)
    r = redis_of(mesh_home)
    assert r.hget("tasks:index", "t1") == "queued" and r.hget("tasks:attempts", "t1") == "0"
    assert "parent gone: stopping task t1 and handing it back" in \
        (tmp_path / "builder-1.log").read_text()

    release.touch()
    again = supervised_worker(tmp_path)  # as the anchor respawns a dead peer
    started(again)
    wait_until(lambda: results(run, "t1"), timeout=60)
    [result] = results(run, "t1")
    assert (result["status"], result["attempt"]) == ("ok", 1)
    assert len(calls(claude_cli)) == 2
    again.send_signal(signal.SIGTERM)
    assert again.wait(timeout=30) == 143


def test_a_stopped_worker_keeps_its_task_and_its_consumer_name(run, mesh_home, tmp_path,
                                                               started):
    """SIGSTOP (or ^Z) past the heartbeat's limit: another worker does not start the task,
    nor does one that takes the stopped one's consumer name; SIGCONT, and it finishes once."""
    release, runs = tmp_path / "release", tmp_path / "runs"
    run("queue-push", "--id", "t2",
        f"echo $$ >> {runs}; while [ ! -e {release} ]; do sleep 0.05; done", check=0)
    first = subprocess.Popen(["queue-drain", "--consumer", "a", "--workdir", str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started(first)
    wait_until(lambda: starts(runs) == 1, timeout=30)
    first.send_signal(signal.SIGSTOP)
    other = subprocess.Popen(["queue-drain", "--consumer", "b", "--workdir", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    same = subprocess.Popen(["queue-drain", "--consumer", "a", "--workdir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started(other)
    started(same)
    stopped_at = worker_record(mesh_home, "a")["beat"]
    # the stopped worker is silent past the limit, and the other one has looked since
    wait_until(lambda: worker_record(mesh_home, "b").get("beat", 0)
               > stopped_at + WORKER_DEAD_AFTER + 2 * BEAT_EVERY, timeout=60)
    assert starts(runs) == 1 and owner(mesh_home) == ["a"]
    wait_for_output(same.stderr, "consumer a is still in use", timeout=30)

    first.send_signal(signal.SIGCONT)
    release.touch()
    wait_until(lambda: results(run, "t2"), timeout=30)
    [result] = results(run, "t2")
    assert (result["status"], result["attempt"], result["worker"]) == ("ok", 1, "a")
    assert starts(runs) == 1
    for worker in (first, other, same):
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 143


def test_a_task_that_outlives_its_killed_worker_is_not_run_beside_it(run, mesh_home, tmp_path,
                                                                     started):
    """The worker is gone (kill -9) but its task's processes are stopped, so its guard has
    not ended them yet: the task is taken over only once they are gone."""
    release, runs = tmp_path / "release", tmp_path / "runs"
    run("queue-push", "--id", "t3",
        f"echo $$ >> {runs}; while [ ! -e {release} ]; do sleep 0.05; done", check=0)
    doomed = subprocess.Popen(["queue-drain", "--consumer", "doomed", "--workdir",
                               str(tmp_path)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    started(doomed)
    wait_until(lambda: starts(runs) == 1, timeout=30)
    [runner] = [p.pid for p in psutil.Process(doomed.pid).children()]  # the task guard
    os.killpg(runner, signal.SIGSTOP)  # the task guard leads its task's process group
    try:
        doomed.kill()
        doomed.wait()
        last_beat = worker_record(mesh_home, "doomed")["beat"]
        rescuer = subprocess.Popen(["queue-drain", "--consumer", "rescuer", "--workdir",
                                    str(tmp_path)], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        started(rescuer)
        wait_until(lambda: worker_record(mesh_home, "rescuer").get("beat", 0)
                   > last_beat + 3 * BEAT_EVERY, timeout=60)
        assert starts(runs) == 1 and owner(mesh_home) == ["doomed"] and not gone(runner)
    finally:
        os.killpg(runner, signal.SIGCONT)  # its guard now sees its worker gone: ends it all
    wait_until(lambda: gone(runner), timeout=30)
    release.touch()
    wait_until(lambda: results(run, "t3"), timeout=60)
    [result] = results(run, "t3")
    assert (result["status"], result["attempt"], result["worker"]) == ("ok", 2, "rescuer")
    assert starts(runs) == 2
    rescuer.send_signal(signal.SIGTERM)
    assert rescuer.wait(timeout=30) == 143


def test_neither_the_lease_nor_a_touch_takes_an_entry_from_a_worker_that_may_run_it(mesh_home):
    from meshtools.queue.broker import Broker
    from meshtools.queue.names import Names

    r = redis_of(mesh_home)
    broker = Broker(r, Names.from_env())
    broker.ensure_group("default")
    entries = [r.xadd("tasks:queue:default", {"task": "{}"}) for _ in range(3)]
    for consumer in ("stopped", "ghost", "taken"):
        broker.read(r, consumer, ["default"], False, 0)
    assert broker.claim_idle("default", "me", 0, spare={"stopped"}.__contains__) == 2
    assert owner(mesh_home) == ["stopped", "me", "me"]
    assert broker.touch("default", "taken", entries[2]) is False  # "me" has it now
    assert broker.touch("default", "me", entries[2]) is True
    assert owner(mesh_home) == ["stopped", "me", "me"]
