"""The task queue against a real redis-server: the embedded one in each test's MESH_HOME."""

import json
import os
import random
import signal
import subprocess
import time

import psutil
import pytest

from meshtools.core import proc

from .helpers import drain, pending, redis_of, wait_for_output, wait_until


def results_by_id(run):
    out = {}
    for record in run("queue-results", check=0).records:
        out.setdefault(record["id"], []).append(record)
    return out


def test_push_drain_results(run, tmp_path):
    pushed = run("queue-push", "echo hello", check=0).records[0]
    assert pushed["kind"] == "task" and pushed["queue"] == "default" and pushed["entry"]
    drained = run("queue-drain", "--burst", "--workdir", str(tmp_path), check=0).records
    assert [(r["id"], r["status"], r["output"]) for r in drained] == [(pushed["id"], "ok", "hello\n")]
    [result] = run("queue-results", check=0).records
    assert result["exit_code"] == 0 and result["attempt"] == 1 and result["worker"]
    assert result["duration"] >= 0 and result["ts"].endswith("Z")


def test_routing_by_role_and_stat(run, mesh_home):
    run("queue-push", "--role", "builder", "true", check=0)
    run("queue-push", "true", check=0)
    stats = {r["queue"]: r for r in run("queue-stat", check=0).records}
    assert stats["builder"]["length"] == 1 and stats["default"]["length"] == 1
    assert stats["builder"]["stream"] == "tasks:queue:builder"
    run("queue-drain", "--queue", "builder", "--burst", check=0)
    stats = {r["queue"]: r for r in run("queue-stat", check=0).records}
    assert stats["builder"]["length"] == 0 and stats["default"]["length"] == 1


def test_a_role_routes_to_its_configured_queue(run, mesh_home):
    """--role (or a task's `role`) goes to the queue roles.toml gives the role, the one its
    workers drain; an unknown role is refused with a did-you-mean, and nothing is queued."""
    mesh_home.mkdir()
    (mesh_home / "roles.toml").write_text('[roles.builder]\nqueue = "build"\n')
    assert run("queue-push", "--role", "builder", "true", check=0).records[0]["queue"] == "build"
    line = json.dumps({"id": "t1", "prompt": "true", "role": "builder"}) + "\n"
    assert run("queue-push", "-", input=line, check=0).records[0]["queue"] == "build"
    refused = run("queue-push", "--role", "buidler", "true", check=65)
    assert "unknown role 'buidler'" in refused.stderr and "'builder'" in refused.stderr
    wrong = line + json.dumps({"id": "t2", "prompt": "true", "role": "nobody"}) + "\n"
    assert "unknown role 'nobody'" in run("queue-push", "-", input=wrong, check=65).stderr
    assert redis_of(mesh_home).xlen("tasks:queue:build") == 2
    assert not redis_of(mesh_home).exists("tasks:queue:builder", "tasks:queue:nobody")


def test_pushing_a_known_id_is_a_no_op(run, mesh_home):
    run("queue-push", "--id", "nightly", "true", check=0)
    again = run("queue-push", "--id", "nightly", "true", check=0).records[0]
    assert again["duplicate"] is True and again["state"] == "queued"
    run("queue-drain", "--burst", check=0)
    done = run("queue-push", "--id", "nightly", "true", check=0).records[0]
    assert done["duplicate"] is True and done["state"] == "done"
    assert redis_of(mesh_home).xlen("tasks:queue:default") == 0
    assert len(results_by_id(run)["nightly"]) == 1


def test_batch_from_stdin(run, mesh_home):
    lines = "\n".join(json.dumps({"id": f"t{i}", "prompt": f"echo {i}", "ticket": i})
                      for i in range(5)) + "\n"
    records = run("queue-push", "-", input=lines, check=0).records
    assert [r["id"] for r in records] == [f"t{i}" for i in range(5)]
    run("queue-drain", "--burst", check=0)
    assert sorted(results_by_id(run)) == [f"t{i}" for i in range(5)]


@pytest.mark.parametrize("stdin,message", [
    ('{"prompt": "true"}\n{"prompt": \n', "stdin line 2: malformed JSON"),
    ('{"prompt": "true"}\n{"id": "x"}\n', "stdin line 2: needs a non-empty string 'prompt'"),
    ('{"prompt": "true", "id": "../x"}\n', "stdin line 1: invalid task id"),
    ('{"prompt": "true", "max_attempts": 0}\n', "max_attempts"),
    ('{"prompt": "true", "timeout": "soon"}\n', "timeout"),
    ('[1]\n', "expected a JSON object"),
    ('{"prompt": "true", "timeout": NaN}\n', "timeout must be a positive finite number"),
    ('{"prompt": "true", "timeout": Infinity}\n', "timeout must be a positive finite number"),
    ('{"prompt": "true", "cost": [-Infinity]}\n', "NaN and Infinity"),
    ('{"id": "a", "prompt": "true"}\n{"prompt": "true"}\n{"id": "a", "prompt": "false"}\n',
     "stdin lines 1 and 3: the same task id 'a'"),
])
def test_malformed_batch_enqueues_nothing(run, mesh_home, stdin, message):
    result = run("queue-push", "-", input=stdin)
    assert result.returncode == 65 and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (mesh_home / "redis").exists()  # refused before Redis was even needed


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "abc"])
@pytest.mark.parametrize("argv", [["queue-push", "true", "--timeout"],
                                  ["queue-drain", "--burst", "--timeout"],
                                  ["queue-drain", "--burst", "--startup-timeout"]])
def test_a_timeout_flag_that_is_no_positive_finite_number_is_a_usage_error(run, mesh_home,
                                                                           argv, value):
    """The flag's FloatRange took nan and inf: 65 from the task check, or a worker whose
    timeout never ends."""
    result = run(*argv, value)
    assert result.returncode == 64 and "is not a" in result.stderr, result.stderr
    assert not (mesh_home / "redis").exists()  # refused before Redis was even needed


@pytest.mark.parametrize("value", ["NaN", "Infinity", "0", "-1"])
def test_a_timeout_in_a_batch_that_is_no_positive_finite_number_is_bad_input(run, mesh_home,
                                                                             value):
    result = run("queue-push", "-", input='{"prompt": "true", "timeout": %s}\n' % value)
    assert result.returncode == 65 and "timeout" in result.stderr


def test_a_pause_beyond_the_clocks_range_is_a_usage_error(run, mesh_home):
    """queue-pause --for 999999999999999999999 was an internal error (OverflowError, 70)."""
    for value in ("999999999999999999999", "3651d"):
        result = run("queue-pause", "--for", value)
        assert result.returncode == 64 and "at most 3650 days" in result.stderr


def test_a_wait_timeout_is_finite_and_not_negative(run, mesh_home):
    for value in ("nan", "-1"):
        assert run("queue-results", "--wait", "x", "--timeout", value).returncode == 64


def test_hand_back_ids_are_valid_task_ids(run, mesh_home):
    assert run("queue-push", "--id", "feat-3~1", "true", check=0).records[0]["id"] == "feat-3~1"
    assert run("queue-push", "--id", "~1", "true").returncode == 65


def strict_json(line):
    def refuse(constant):
        raise AssertionError(f"{constant} in JSON output: {line}")
    return json.loads(line, parse_constant=refuse)


BAD_ENTRIES = [  # (the entry's fields, as a raw XADD writes them; the reason a worker gives)
    ({"task": '{"id": "torn", "prompt": '}, "malformed JSON"),
    ({"task": '{"id": "../x", "prompt": "true"}'}, "invalid task id"),
    ({"task": '{"id": "nan", "prompt": "true", "timeout": NaN}'}, "timeout"),
    ({"task": '{"id": "mute"}'}, "needs a non-empty string 'prompt'"),
    ({"task": '{"prompt": "true"}'}, "no task id"),
    ({"task": '"just a string"'}, "a task is a JSON object"),
    ({"job": "true"}, "no 'task' field"),
]


def test_an_entry_no_worker_can_run_is_dead_lettered_and_the_worker_goes_on(run, mesh_home):
    r = redis_of(mesh_home)
    entries = [r.xadd("tasks:queue:default", fields) for fields, _ in BAD_ENTRIES]
    run("queue-push", "--id", "good", "echo fine", check=0)
    worker = run("queue-drain", "--burst")
    assert worker.returncode == 0, worker.stderr
    drained = [strict_json(line) for line in worker.stdout.splitlines()]
    assert [d["status"] for d in drained] == ["invalid"] * len(BAD_ENTRIES) + ["ok"]
    assert drained[-1]["id"] == "good" and drained[-1]["output"] == "fine\n"
    listed = run("queue-dead", "list")
    letters = [strict_json(line) for line in listed.stdout.splitlines()]
    assert len(letters) == len(BAD_ENTRIES)
    for letter, (fields, reason) in zip(letters, BAD_ENTRIES):
        assert reason in letter["reason"], (letter, reason)
    given = {2: "nan", 3: "mute"}  # the others have no valid id: their entry's stands in
    assert [x["id"] for x in letters] == [given.get(n, f"entry-{e}")
                                          for n, e in enumerate(entries)]
    assert r.hget("tasks:index", "nan").startswith("dead:")  # --wait on it ends
    assert r.xlen("tasks:queue:default") == 0 and pending(mesh_home) == 0
    # A letter that is still no task is not put back (65), and stays.
    retry = run("queue-dead", "retry", "nan")
    assert retry.returncode == 65 and "timeout" in retry.stderr
    assert len(run("queue-dead", "list", check=0).records) == len(BAD_ENTRIES)


def test_json_output_never_carries_nan():
    """Python's json reads and writes NaN; jq and strict readers refuse it."""
    from meshtools.core import jsonl

    assert jsonl.dumps({"a": float("nan"), "b": [float("inf")], "c": 1.5}) == \
        '{"a":null,"b":[null],"c":1.5}'


def test_a_prompt_longer_than_one_argument_may_be_runs(run, tmp_path):
    filler = "x" * (200 * 1024)
    prompt = f": {filler}\necho {len(filler)}"
    run("queue-push", "-", input=json.dumps({"id": "long", "prompt": prompt}) + "\n", check=0)
    [result] = run("queue-drain", "--burst", "--workdir", str(tmp_path), check=0).records
    assert (result["status"], result["output"]) == ("ok", f"{len(filler)}\n")


def test_a_departed_burst_consumer_leaves_the_group(run, mesh_home):
    run("queue-push", "true", check=0)
    run("queue-drain", "--burst", "--consumer", "burst-1", check=0)
    [stat] = run("queue-stat", check=0).records
    assert stat["consumers"] == []


def test_stat_tells_a_waiting_worker_from_a_dead_one(run, mesh_home):
    """Redis's idle time grows while a live worker waits for a task; queue-stat shows its
    heartbeat age and whether it is alive by the workers' own rule beside it."""
    from meshtools.queue.broker import Broker
    from meshtools.queue.names import Names

    run("queue-push", "--id", "first", "true", check=0)
    worker = drain("--consumer", "waiting")

    def consumers():
        [stat] = run("queue-stat", check=0).records
        return {c["name"]: c for c in stat["consumers"]}

    try:
        wait_until(lambda: "first" in results_by_id(run) and "waiting" in consumers())
        waiting = consumers()["waiting"]
        assert waiting["alive"] is True and 0 <= waiting["beat_age"] < 10
        broker = Broker(redis_of(mesh_home), Names.from_env())
        broker.read(broker.redis, "ghost", ["default"], True, 0)  # in the group, never beat
        assert {k: v for k, v in consumers()["ghost"].items() if k != "idle_ms"} == \
            {"name": "ghost", "pending": 0, "beat_age": None, "alive": False}
    finally:
        worker.kill()
        worker.wait()
    assert consumers()["waiting"]["alive"] is False  # its process is gone: dead at once


def test_a_consumer_with_pending_entries_stays_in_the_group(mesh_home):
    from meshtools.queue.broker import Broker
    from meshtools.queue.names import GROUP, Names

    r = redis_of(mesh_home)
    broker = Broker(r, Names.from_env())
    broker.ensure_group("default")
    entry = r.xadd("tasks:queue:default", {"task": "{}"})
    assert broker.read(r, "busy", ["default"], False, 0)[1] == entry
    assert broker.leave(["default", "elsewhere"], "busy") is False
    assert [c["name"] for c in r.xinfo_consumers("tasks:queue:default", GROUP)] == ["busy"]
    r.xack("tasks:queue:default", GROUP, entry)
    assert broker.leave(["default", "elsewhere"], "busy") is True
    assert r.xinfo_consumers("tasks:queue:default", GROUP) == []


def test_results_are_read_through_one_reader(run, mesh_home):
    """queue.results is what queue-results and the anchor read with; queue.stats what
    queue-stat shows."""
    from meshtools.core.errors import BadInput, Busy
    from meshtools.queue.broker import Broker
    from meshtools.queue.names import Names
    from meshtools.queue.results import Results
    from meshtools.queue.stats import queue_records

    for n in range(3):
        run("queue-push", "--id", f"t{n}", f"echo {n}", check=0)
    run("queue-push", "--id", "later", "true", check=0)
    run("queue-drain", "--max-tasks", "3", check=0)
    broker = Broker(redis_of(mesh_home), Names.from_env())
    results = Results(broker)
    first = results.follow(count=2)
    assert [r["id"] for _, r in first] == ["t0", "t1"]
    rest = results.follow(first[-1][0], block=None)
    assert [(r["id"], r["output"]) for _, r in rest] == [("t2", "2\n")]
    assert results.follow(rest[-1][0], block=None) == []
    assert results.wait("t1")["output"] == "1\n"
    with pytest.raises(Busy):
        results.wait("later", timeout=0.1)
    with pytest.raises(BadInput):
        results.wait("never-pushed")
    [stat] = queue_records(broker)
    assert (stat["queue"], stat["length"], stat["pending"], stat["dead"]) == ("default", 1, 0, 0)
    assert stat["oldest_age"] >= 0  # "later" waits: its age grows between the two reads
    assert stat == {**run("queue-stat", "--json", check=0).records[0], "ts": stat["ts"],
                    "oldest_age": stat["oldest_age"]}


CRASHING_WORKER = """
from meshtools.core.home import MeshHome
from meshtools.queue.broker import Broker
from meshtools.queue.connection import connect
from meshtools.queue.names import Names
from meshtools.queue.worker import Worker


class Broken:  # an executor with a bug: the worker dies with its entry pending
    def run(self, task, workdir, timeout, on_start=None):
        raise RuntimeError("a bug")

    def interrupt(self):
        pass


def broker():
    return Broker(connect(MeshHome.find()), Names.from_env())


Worker(broker(), broker(), Broken(), "crasher", ["default"], ".").run()
"""


def test_a_worker_that_crashes_mid_task_leaves_its_entry_to_be_reclaimed(run, mesh_home):
    """Its heartbeat stays (it used to delete it on the way out, so nobody reclaimed the
    entry before the hour's lease)."""
    import sys

    run("queue-push", "--id", "r1", "echo rescued", check=0)
    crashed = subprocess.run([sys.executable, "-c", CRASHING_WORKER], capture_output=True,
                             text=True, timeout=60)
    assert crashed.returncode == 1 and "a bug" in crashed.stderr
    assert redis_of(mesh_home).hexists("tasks:workers", "crasher")
    [result] = run("queue-drain", "--max-tasks", "1", "--consumer", "rescuer", check=0,
                   timeout=30).records
    assert (result["id"], result["status"], result["attempt"]) == ("r1", "ok", 2)
    assert [c["name"] for c in run("queue-stat", check=0).records[0]["consumers"]] == []


def test_redis_down_is_69_one_line(run, tmp_path):
    env = {"MESH_REDIS_URL": f"unix://{tmp_path}/nothing.sock"}
    for argv in (["queue-push", "true"], ["queue-stat"], ["queue-results"], ["queue-drain", "--once"]):
        result = run(*argv, env=env)
        assert result.returncode == 69, (argv, result.stderr)
        assert "redis unavailable" in result.stderr and result.stderr.count("\n") == 1


def test_too_old_redis_is_refused(run, tmp_path):
    from meshtools.queue import connection
    assert connection.MIN_VERSION == (6, 2)  # the version gate exists; its message:
    result = run("queue-stat", env={"MESH_REDIS_URL": "redis://localhost:1"})
    assert result.returncode == 69


def test_poison_task_is_dead_lettered_and_the_rest_go_on(run, mesh_home):
    run("queue-push", "--id", "poison", "--max-attempts", "3", "exit 7", check=0)
    for n in range(5):
        run("queue-push", "--id", f"ok{n}", "true", check=0)
    drained = run("queue-drain", "--burst", check=0).records
    assert [r["attempt"] for r in drained if r["id"] == "poison"] == [1, 2, 3]
    final = results_by_id(run)
    assert len(final["poison"]) == 1 and final["poison"][0]["dead_letter"] is True
    assert all(final[f"ok{n}"][0]["status"] == "ok" for n in range(5))
    [letter] = run("queue-dead", "list", check=0).records
    assert letter["id"] == "poison" and "attempt 3 of 3" in letter["reason"]
    assert run("queue-stat", check=0).records[0]["dead"] == 1


def test_dead_letters_retry_and_purge(run, mesh_home):
    run("queue-push", "--id", "flaky", "--max-attempts", "1", "test -f ok", check=0)
    run("queue-drain", "--burst", check=0)
    (mesh_home.parent / "ok").touch()
    retried = run("queue-dead", "retry", "flaky", check=0).records[0]
    assert retried["retried"] is True
    run("queue-drain", "--burst", "--workdir", str(mesh_home.parent), check=0)
    assert results_by_id(run)["flaky"][-1]["status"] == "ok"
    assert run("queue-dead", "list", check=0).records == []
    run("queue-push", "--id", "gone", "--max-attempts", "1", "false", check=0)
    run("queue-drain", "--burst", check=0)
    run("queue-dead", "purge", "--all", check=0)
    assert run("queue-dead", "list", check=0).records == []
    assert "duplicate" not in run("queue-push", "--id", "gone", "true", check=0).records[0]
    assert run("queue-dead", "retry", "nope").returncode == 65
    assert run("queue-dead", "retry").returncode == 64


def test_purging_a_duplicate_letter_keeps_the_tasks_state(run, mesh_home):
    """Purge deleted the id from tasks:index whatever it said: a letter left by a second
    run of a task that is done (or was retried since) erased that task's state."""
    from meshtools.queue.broker import Broker, DeadLetters
    from meshtools.queue.names import Names

    broker = Broker(redis_of(mesh_home), Names.from_env())
    index = broker.names.index
    for task_id, command in (("done", "true"), ("again", "false")):
        run("queue-push", "--id", task_id, "--max-attempts", "1", command, check=0)
        run("queue-drain", "--burst", check=0)
        # a second run of the same task (a reclaimed entry) dead-letters it once more
        [result] = results_by_id(run)[task_id]
        broker.dead_letter("default", "0-1", {"id": task_id, "prompt": command}, result, "dup")
    letters = DeadLetters(broker)
    first = next(r for r in letters.list() if r["id"] == "again")
    letters.retry(first)  # queued again, one letter of it left
    states = {i: broker.redis.hget(index, i) for i in ("done", "again")}
    assert states["done"].startswith("done:") and states["again"] == "queued"
    run("queue-dead", "purge", "done", "again", check=0)
    assert run("queue-dead", "list", check=0).records == []
    assert {i: broker.redis.hget(index, i) for i in states} == states
    assert run("queue-results", "--wait", "done", check=0).records[0]["status"] == "ok"
    assert run("queue-push", "--id", "again", "true", check=0).records[0]["duplicate"]


def test_retrying_duplicate_letters_never_gives_an_id_a_second_final_result(run, mesh_home):
    """RETRY_DEAD set the id `queued` whatever it said: a duplicate letter of a task done
    since ran it again (a second final result); two letters of one id queued it twice."""
    from meshtools.queue.broker import Broker
    from meshtools.queue.names import Names

    broker = Broker(redis_of(mesh_home), Names.from_env())
    for task_id, command in (("done", "true"), ("twice", "false")):
        run("queue-push", "--id", task_id, "--max-attempts", "1", command, check=0)
        run("queue-drain", "--burst", check=0)
        [result] = results_by_id(run)[task_id]
        # a second run of the same task (a reclaimed entry) dead-letters it once more
        broker.dead_letter("default", "0-1", {"id": task_id, "prompt": "true"}, result, "dup")
    assert sorted(r["id"] for r in run("queue-dead", "list", check=0).records) == \
        ["done", "twice", "twice"]
    retried = run("queue-dead", "retry", "--all", check=0).records
    assert sorted((r["id"], r["retried"]) for r in retried) == \
        [("done", False), ("twice", False), ("twice", True)]
    assert run("queue-dead", "list", check=0).records == []
    assert len(run("queue-drain", "--burst", check=0).records) == 1  # "twice", once
    final = results_by_id(run)
    assert [r["status"] for r in final["done"]] == ["ok"]
    assert len(final["twice"]) == 2  # its dead result, then the one retry's


def test_timeout_kills_the_task(run, tmp_path):
    pidfile = tmp_path / "pid"
    run("queue-push", "--id", "slow", "--timeout", "0.3", "--max-attempts", "1",
        f"sleep 30 & echo $! > {pidfile}; wait", check=0)
    [result] = run("queue-drain", "--burst", check=0).records
    assert result["status"] == "timeout"
    sleeper = int(pidfile.read_text())

    def gone():
        try:
            return psutil.Process(sleeper).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(gone)  # the whole group went: not even the background sleep is left


def test_wait_blocks_until_the_result(run, mesh_home):
    run("queue-push", "--id", "later", "sleep 0.5; echo done", check=0)
    waiter = subprocess.Popen(["queue-results", "--wait", "later"], stdout=subprocess.PIPE,
                              text=True)
    r = redis_of(mesh_home)
    wait_until(lambda: any(c["cmd"] == "xread" and "b" in c["flags"] for c in r.client_list()))
    assert waiter.poll() is None  # blocked on the results stream, no result yet
    run("queue-drain", "--once", check=0)
    out, _ = waiter.communicate(timeout=20)
    assert waiter.returncode == 0 and json.loads(out)["output"] == "done\n"
    assert run("queue-results", "--wait", "later", check=0).records[0]["id"] == "later"
    run("queue-push", "--id", "never", "true", check=0)
    assert run("queue-results", "--wait", "never", "--timeout", "0.2").returncode == 75
    assert run("queue-results", "--wait", "unknown-id").returncode == 65


def test_events_stream_sees_enqueue_and_completion(run):
    run("queue-push", "--id", "e1", "true", check=0)
    run("queue-drain", "--burst", check=0)
    names = [e["event"] for e in run("mesh-events", "--event", "task.", check=0).records]
    assert names == ["task.enqueued", "task.ok"]


def test_a_task_leaves_no_background_job_behind(run, tmp_path):
    pidfile = tmp_path / "job.pid"
    run("queue-push", "--id", "bg", f"sleep 1000 >/dev/null 2>&1 & echo $! > {pidfile}",
        check=0)
    run("queue-drain", "--once", check=0)
    assert run("queue-results", "--task", "bg", check=0).records[0]["status"] == "ok"
    job = int(pidfile.read_text())
    wait_until(lambda: proc.start_time(job) is None)  # gone (or a zombie about to be reaped)


@pytest.mark.parametrize("signum, again", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "^C")])
def test_a_stop_signal_finishes_the_current_task_then_exits(run, mesh_home, tmp_path, signum,
                                                            again):
    """Finished, and still reported as stopped by the signal (143 / 130), saying so once."""
    run("queue-push", "--id", "busy", "touch started; sleep 1; echo finished", check=0)
    worker = drain("--workdir", str(tmp_path), capture=True)
    wait_until(lambda: (tmp_path / "started").exists())  # read is not yet started
    worker.send_signal(signum)
    out, err = worker.communicate(timeout=30)
    assert err.splitlines() == [f"queue-drain: finishing task busy, {again} again to hand "
                                "it back"]
    assert worker.returncode == 128 + signum and json.loads(out)["output"] == "finished\n"
    assert run("queue-results", "--task", "busy", check=0).records[0]["status"] == "ok"


def test_ctrl_c_when_idle_says_it_stops(run, mesh_home):
    worker = drain(capture=True)
    wait_until(lambda: redis_of(mesh_home).hlen("tasks:workers") == 1)
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 130
    assert err.splitlines() == ["queue-drain: no task running, stopping"]


SIGNAL_DURING_A_WRITE = """
import io, os, signal, sys
from meshtools.queue.worker import Worker


class Interrupting(io.RawIOBase):
    writes = 0

    def writable(self):
        return True

    def write(self, data):  # ^C lands while the main thread is inside stderr's buffer
        self.writes += 1
        if self.writes == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return os.write(2, bytes(data))


sys.stderr = io.TextIOWrapper(io.BufferedWriter(Interrupting()), write_through=True)
Worker(None, None, None, "w", ["default"], ".")._install_signals()
print("busy writing", file=sys.stderr, flush=True)
"""


STOPPED_AFTER_THE_READ = """
import os, signal, sys
from meshtools.core.home import MeshHome
from meshtools.queue.broker import Broker
from meshtools.queue.connection import connect
from meshtools.executors.process import ShellExecutor
from meshtools.queue.names import Names
from meshtools.queue.worker import Worker


class StoppedAfterTheRead(Broker):
    def start_attempt(self, task_id):  # SIGTERM lands between reading an entry and its start
        os.kill(os.getpid(), signal.SIGTERM)
        return super().start_attempt(task_id)


def broker(cls=Broker):
    return cls(connect(MeshHome.find()), Names.from_env())


sys.exit(Worker(broker(StoppedAfterTheRead), broker(), ShellExecutor(), "w", ["default"],
                sys.argv[1]).run())
"""


def test_a_stop_that_said_no_task_is_running_starts_none(run, mesh_home, tmp_path):
    """A SIGTERM just after the worker read an entry said "no task running, stopping", and
    then the worker ran the task all the same (a flaky test under load showed it)."""
    import sys

    run("queue-push", "--id", "late", "touch ran", check=0)
    done = subprocess.run([sys.executable, "-c", STOPPED_AFTER_THE_READ, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr
    assert done.stderr.splitlines() == ["queue-drain: no task running, stopping"]
    assert not (tmp_path / "ran").exists()
    assert run("queue-results", "--task", "late", check=0).records == []
    [record] = run("queue-drain", "--burst", "--workdir", str(tmp_path), check=0).records
    assert record["id"] == "late" and record["attempt"] == 1 and (tmp_path / "ran").exists()


def test_the_stop_notice_is_safe_while_stderr_is_being_written():
    """The handler printed through sys.stderr: a signal during the main thread's own write
    raised "reentrant call inside <_io.BufferedWriter name='<stderr>'>"."""
    import sys

    done = subprocess.run([sys.executable, "-c", SIGNAL_DURING_A_WRITE], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stderr.splitlines()) == ["busy writing",
                                                "queue-drain: no task running, stopping"]


LONG_BLOCK = """
import sys
from meshtools.core.home import MeshHome
from meshtools.queue.broker import Broker
from meshtools.queue.connection import connect
from meshtools.executors.process import ShellExecutor
from meshtools.queue.names import Names
from meshtools.queue.worker import Worker


def broker():
    return Broker(connect(MeshHome.find()), Names.from_env())


sys.exit(Worker(broker(), broker(), ShellExecutor(), "idle", ["default"], sys.argv[1],
                block_ms=600_000).run())
"""


def test_a_stop_ends_an_idle_workers_blocking_read(run, mesh_home, tmp_path):
    """It waited out its BLOCK first (2 s for queue-drain): meshctl down of an idle mesh
    took that long; here the BLOCK is ten minutes."""
    import sys

    r = redis_of(mesh_home)
    worker = subprocess.Popen([sys.executable, "-c", LONG_BLOCK, str(tmp_path)],
                              stderr=subprocess.PIPE, text=True)
    wait_until(lambda: any(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")
                           for c in r.client_list()), timeout=30)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 143 and err == "queue-drain: no task running, stopping\n"
    assert not r.hexists("tasks:workers", "idle")  # it left cleanly: nothing pending
    run("queue-push", "--id", "after", "echo after", check=0)
    [record] = run("queue-drain", "--burst", "--workdir", str(tmp_path), check=0).records
    assert (record["id"], record["status"]) == ("after", "ok")


def test_second_sigterm_hands_the_task_back(run, mesh_home, tmp_path):
    run("queue-push", "--id", "handed", "touch started; sleep 30", check=0)
    worker = drain("--workdir", str(tmp_path), capture=True)
    wait_until(lambda: (tmp_path / "started").exists())  # running: read is not yet started
    worker.send_signal(signal.SIGTERM)
    wait_for_output(worker.stderr, "SIGTERM again to hand it back")  # the first one landed
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 143 and "stopping task handed and handing it back" in err
    r = redis_of(mesh_home)
    assert r.xlen("tasks:queue:default") == 1 and r.hget("tasks:index", "handed") == "queued"
    assert r.hget("tasks:attempts", "handed") == "0"  # a hand-back is not an attempt


def test_kill_9_mid_task_is_taken_over(run, mesh_home):
    run("queue-push", "--id", "survivor", "sleep 1; echo survived", check=0)
    doomed = drain("--consumer", "doomed")
    wait_until(lambda: pending(mesh_home) == 1)
    doomed.kill()
    doomed.wait()
    rescuer = drain("--consumer", "rescuer", "--once", capture=True)
    out, _ = rescuer.communicate(timeout=120)  # how fast: bench/taskqueue.py measures it
    record = json.loads(out)
    assert record["id"] == "survivor" and record["status"] == "ok" and record["attempt"] == 2


def test_crash_looping_task_is_dead_lettered(run, mesh_home):
    """A task that kills its worker every time is delivered max_attempts times, no more."""
    guard = "$(ps -o ppid= -p $$)"  # the task's shell runs under the task guard
    run("queue-push", "--id", "killer", "--max-attempts", "2",
        f"kill -9 $(ps -o ppid= -p {guard})", check=0)
    for n in range(2):
        run("queue-drain", "--consumer", "slot-1", "--burst")  # killed by its task
    run("queue-drain", "--consumer", "slot-1", "--burst", check=0)
    [record] = results_by_id(run)["killer"]
    assert record["dead_letter"] is True and "delivered 3 times" in record["reason"]


def test_embedded_redis_restart_loses_nothing(run, mesh_home):
    lines = "".join(json.dumps({"id": f"r{i}", "prompt": "true"}) + "\n" for i in range(200))
    run("queue-push", "-", input=lines, check=0)
    run("queue-drain", "--max-tasks", "50", check=0)
    run("mesh-redis", "stop", check=0)
    assert run("mesh-redis", "status").returncode == 1
    run("mesh-redis", "start", check=0)
    run("queue-drain", "--burst", check=0)
    results = results_by_id(run)
    assert sorted(results) == sorted(f"r{i}" for i in range(200))
    assert all(len(v) == 1 and v[0]["status"] == "ok" for v in results.values())


def test_worker_rides_out_a_redis_restart(run, mesh_home, tmp_path):
    lines = "".join(json.dumps({"id": f"w{i}", "prompt": "sleep 0.01"}) + "\n" for i in range(150))
    run("queue-push", "-", input=lines, check=0)
    said = tmp_path / "worker.err"
    with open(said, "w") as err:
        worker = subprocess.Popen(["queue-drain", "--consumer", "steady"],
                                  stdout=subprocess.DEVNULL, stderr=err)
    wait_until(lambda: len(run("queue-results", check=0).records) >= 20)
    run("mesh-redis", "stop", check=0)
    wait_until(lambda: "redis unavailable" in said.read_text())  # the worker saw it go
    run("mesh-redis", "start", check=0)
    wait_until(lambda: len(run("queue-results", check=0).records) >= 150, timeout=60)
    worker.terminate()
    worker.wait(timeout=30)
    results = results_by_id(run)
    assert sorted(results) == sorted(f"w{i}" for i in range(150))
    assert all(len(v) == 1 for v in results.values())


def test_worker_waits_out_a_redis_that_refuses_writes(run, mesh_home, tmp_path):
    """MISCONF (Redis cannot persist: a full disk) is waited out like a lost connection,
    not a crash (#6). Made for real: a snapshot that cannot be renamed into place."""
    import redis

    r = redis_of(mesh_home)
    errors = tmp_path / "worker.err"
    with open(errors, "w") as err:
        worker = subprocess.Popen(["queue-drain"], stdout=subprocess.DEVNULL, stderr=err)
    wait_until(lambda: r.hlen("tasks:workers") == 1)
    blocker = mesh_home / "redis" / "dump.rdb"
    (blocker / "dir").mkdir(parents=True)
    r.config_set("save", "1 1")

    def saved(status):
        try:
            r.bgsave()
        except redis.ResponseError:  # one is in progress already
            pass
        return r.info("persistence")["rdb_last_bgsave_status"] == status

    wait_until(lambda: saved("err"))
    with pytest.raises(redis.ResponseError, match="MISCONF"):
        r.set("probe", 1)
    wait_until(lambda: "MISCONF" in errors.read_text() or worker.poll() is not None)
    assert worker.poll() is None
    (blocker / "dir").rmdir()
    blocker.rmdir()  # space is back
    wait_until(lambda: saved("ok"))
    run("queue-push", "--id", "after", "echo back", check=0)
    record = run("queue-results", "--wait", "after", "--timeout", "30", check=0).records[0]
    assert record["output"] == "back\n"
    worker.terminate()
    assert worker.wait(timeout=30) == 128 + signal.SIGTERM  # stopped by a signal


def test_sigterm_stops_an_idle_worker_whose_redis_is_down(run, mesh_home, tmp_path):
    """Nothing to record: it does not wait for a Redis that was stopped on purpose."""
    errors = tmp_path / "worker.err"
    with open(errors, "w") as err:
        worker = subprocess.Popen(["queue-drain"], stdout=subprocess.DEVNULL, stderr=err)
    wait_until(lambda: redis_of(mesh_home).hlen("tasks:workers") == 1)
    run("mesh-redis", "stop", check=0)
    wait_until(lambda: "retrying" in errors.read_text())
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 69
    assert errors.read_text().endswith("; stopped\n")


def test_a_killed_embedded_redis_is_restarted_by_its_worker(run, mesh_home):
    """kill -9 of the mesh's own Redis heals with no command run by anyone (#11)."""
    from meshtools.core.home import MeshHome
    from meshtools.queue.server import EmbeddedRedis

    server = EmbeddedRedis(MeshHome(str(mesh_home)))
    run("queue-push", "--id", "before", "true", check=0)
    worker = drain()
    wait_until(lambda: "before" in results_by_id(run))
    crashed = server.pid()
    os.kill(crashed, signal.SIGKILL)
    wait_until(lambda: server.pid() not in (None, crashed), timeout=20)  # files only: no client
    run("queue-push", "--id", "after", "echo healed", check=0)
    record = run("queue-results", "--wait", "after", "--timeout", "30", check=0).records[0]
    assert record["output"] == "healed\n"
    assert sorted(results_by_id(run)) == ["after", "before"]
    worker.terminate()
    assert worker.wait(timeout=30) == 128 + signal.SIGTERM  # stopped by a signal


@pytest.mark.slow
def test_thousand_tasks_four_workers_random_kill_9(run, mesh_home):
    total = 1000
    lines = "".join(json.dumps({"id": f"k{i:04d}", "prompt": "sleep 0.005",
                                "max_attempts": 20}) + "\n" for i in range(total))
    run("queue-push", "-", input=lines, check=0)
    slots = {f"slot-{n}": drain("--consumer", f"slot-{n}") for n in range(4)}
    rng = random.Random(7)
    r = redis_of(mesh_home)
    kills = 0
    deadline = time.monotonic() + 240
    while r.hlen("tasks:index") and time.monotonic() < deadline:
        done = sum(1 for v in r.hvals("tasks:index") if v.startswith("done:"))
        if done >= total:
            break
        time.sleep(rng.uniform(0.05, 0.3))
        if kills < 12:
            name = rng.choice(sorted(slots))
            slots[name].kill()  # SIGKILL, mid-task more often than not
            slots[name].wait()
            kills += 1
            slots[name] = drain("--consumer", name)  # the slot restarts under its name
    for worker in slots.values():
        worker.terminate()
        worker.wait(timeout=30)
    results = results_by_id(run)
    assert kills == 12
    assert len(results) == total  # none lost
    assert all(len(v) == 1 and v[0]["status"] == "ok" for v in results.values())  # one each


def test_a_paused_mesh_starts_no_task_until_resumed(run, mesh_home, tmp_path):
    run("queue-pause", "--for", "10m", "--reason", "maintenance", check=0)
    stat = run("queue-stat", "--json", check=0).records
    assert [r["reason"] for r in stat if r["kind"] == "pause"] == ["maintenance"]
    marker = tmp_path / "ran"
    run("queue-push", "--id", "p1", f"touch {marker}", check=0)
    r = redis_of(mesh_home)
    worker = drain("--once")
    try:
        wait_until(lambda: r.hlen("tasks:workers") == 1)  # up: next, it looks at the pause
        looked = r.info("commandstats")["cmdstat_get"]["calls"]
        # The pause is a GET of mesh:paused, looked at again each second while it lasts:
        # two more looks, and the task is still not started.
        wait_until(lambda: r.info("commandstats")["cmdstat_get"]["calls"] >= looked + 2)
        assert not marker.exists() and worker.poll() is None and pending(mesh_home) == 0
        assert run("queue-resume", check=0).records[0]["resumed"] is True
        assert worker.wait(timeout=30) == 0
    finally:
        worker.kill()
    assert marker.exists()
    assert [r["kind"] for r in run("queue-stat", "--json", check=0).records] == ["queue"]


def test_pause_needs_a_duration(run):
    result = run("queue-pause", "--for", "soon")
    assert result.returncode == 64 and "not a duration" in result.stderr


def test_connections_cut_at_random_moments_strand_no_task(run, mesh_home):
    total = 200
    lines = "".join(json.dumps({"id": f"c{i}", "prompt": "true", "max_attempts": 50}) + "\n"
                    for i in range(total))
    run("queue-push", "-", input=lines, check=0)
    worker = drain("--consumer", "cut")
    r = redis_of(mesh_home)
    rng = random.Random(3)
    try:
        # Cuts start once the worker is up: one cut while it first connects is exit 69 by
        # design (Redis unavailable at start; its supervisor starts it again), and on a busy
        # machine that was this test's only failure.
        wait_until(lambda: r.hexists("tasks:workers", "cut") or worker.poll() is not None,
                   timeout=60)
        assert worker.poll() is None
        for _ in range(1000):  # cuts at random moments while the work goes on...
            if r.xlen("tasks:results") >= total:
                break
            time.sleep(rng.uniform(0.005, 0.05))
            r.client_kill_filter(_type="normal", skipme=True)  # every worker connection
        # ...then however slow the machine, every task gets its one result
        wait_until(lambda: r.xlen("tasks:results") >= total, timeout=300)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    results = results_by_id(run)
    assert sorted(results) == sorted(f"c{i}" for i in range(total))
    assert all(len(v) == 1 for v in results.values())


def test_a_worker_on_a_terminal_says_what_it_waits_for(mesh_home, tmp_path):
    """In the foreground with an empty queue, queue-drain showed nothing until a ^C."""
    from .helpers import interrupted_on_terminal

    code, shown = interrupted_on_terminal(["queue-drain", "--workdir", str(tmp_path)],
                                          "(^C to stop)")
    assert code == 130 and f"waiting for tasks on queue default in {tmp_path}" in shown


def test_a_push_on_a_terminal_names_the_key_it_wrote_to(run, mesh_home):
    """With --namespace the line named tasks:queue:default, a key nobody reads."""
    from .helpers import on_terminal

    code, shown, _ = on_terminal(["queue-push", "--namespace", "ns1", "--id", "n1", "true"])
    assert code == 0 and "n1 -> ns1:tasks:queue:default" in shown
    assert redis_of(mesh_home).xlen("ns1:tasks:queue:default") == 1
