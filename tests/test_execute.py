"""meshctl execute: route, enqueue, follow. Real processes, the test's own Redis."""

import json
import os
import pty
import re
import subprocess
import sys

import pytest

from .helpers import (BIN, kill_tree, on_terminal, read_terminal, redis_of, register_dead,
                      spawn_worker, wait_until)


def _queued(mesh_home, queue: str) -> list[dict]:
    entries = redis_of(mesh_home).xrange(f"tasks:queue:{queue}")
    return [json.loads(fields["task"]) for _, fields in entries]


def _index(mesh_home) -> dict:
    return redis_of(mesh_home).hgetall("tasks:index")


def test_dry_run_decides_without_enqueuing_and_shows_the_scores(run, repo, mesh_home):
    [record] = run("meshctl", "execute", "--dry-run", "cut the 2.4.0 release", check=0).records
    assert record["kind"] == "route" and record["dry_run"] is True
    assert (record["role"], record["queue"], record["confident"]) == ("triage", "triage", True)
    assert record["scores"]["triage"] > 0 and set(record["scores"]) >= {"builder", "security"}
    assert not (mesh_home / "redis").exists()  # no Redis started, none needed
    code, shown, _ = on_terminal([os.path.join(BIN, "meshctl"), "execute", "--dry-run",
                                  "cut the 2.4.0 release"])
    assert code == 0 and "-> triage (matched triage" in shown and "not enqueued" in shown
    assert "scores: triage " in shown and "builder 0" in shown
    assert not (mesh_home / "redis").exists()


def test_a_dry_run_imports_no_redis_client(repo):
    """--dry-run is start-up cost only (bench/cold_start.py): no redis-py, no tabulate."""
    probe = ("import sys; sys.argv = ['meshctl', 'execute', '--dry-run', 'fix crates/a.rs']\n"
             "from meshtools.commands.meshctl import meshctl\n"
             "try:\n    meshctl()\nexcept SystemExit as e:\n    code = e.code\n"
             "print(code, *(m for m in ('redis', 'tabulate', 'psutil') if m in sys.modules),"
             " file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stderr == "0\n" and json.loads(done.stdout)["role"] == "builder"


def test_json_names_role_id_reason_and_scores(run, repo, mesh_home):
    [record] = run("meshctl", "execute", "--json", "--id", "job-1",
                   "scan the repo for committed secrets", check=0).records
    assert record["id"] == "job-1" and record["role"] == "security"
    assert record["reason"].startswith("matched security") and record["scores"]["security"]
    assert record["queue"] == "security" and record["entry"]
    [task] = _queued(mesh_home, "security")
    assert task["id"] == "job-1" and task["hops"] == 0 and task["scopes"] == []


def test_a_builder_task_naming_a_path_carries_its_scope(run, repo, mesh_home):
    (repo / "crates/net/src").mkdir(parents=True)
    (repo / "crates/net/Cargo.toml").write_text("[package]\nname='net'\n")
    run("meshctl", "execute", "crates/net/src/client.rs panics on an empty response, fix it; "
        "leave /etc/hosts alone", check=0)
    [task] = _queued(mesh_home, "builder")
    assert task["role"] == "builder" and task["scopes"] == ["crates/net"]  # /etc: outside
    assert task["prompt"].endswith("Lock scopes for this task: crates/net (file-lock acquire "
                                   "crates/net before editing)")


def test_unconfident_tasks_go_to_the_anchor_and_named_roles_win(run, repo, mesh_home):
    run("meshctl", "execute", "make it better", check=0)
    run("meshctl", "execute", "@memory fix the failing test", check=0)
    run("meshctl", "execute", "--role", "groomer", "fix the failing test", check=0)
    assert [t["prompt"] for t in _queued(mesh_home, "anchor")] == ["make it better"]
    assert [t["prompt"] for t in _queued(mesh_home, "memory")] == ["fix the failing test"]
    assert [t["role"] for t in _queued(mesh_home, "groomer")] == ["groomer"]


@pytest.mark.parametrize("argv", [["--role", "wizard", "fix it"], ["@wizard fix it"]])
def test_an_unknown_role_is_65_with_the_roles_listed(run, repo, mesh_home, argv):
    result = run("meshctl", "execute", *argv, check=65)
    assert result.stderr == ("meshctl: unknown role 'wizard' (roles: anchor, builder, groomer, "
                             "memory, research, security, triage)\n")


@pytest.mark.parametrize("task", ["", "   ", "@builder"])
def test_an_empty_task_is_65(run, repo, mesh_home, task):
    assert run("meshctl", "execute", task, check=65).stderr == "meshctl: empty task\n"
    assert not (mesh_home / "redis").exists()


def test_a_stdin_batch_is_routed_and_enqueued_whole(run, repo, mesh_home):
    lines = ('{"prompt": "groom the backlog", "id": "g1"}\n'
             "cut the 2.4.0 release\n"
             '{"prompt": "anything at all", "role": "research"}\n')
    records = run("meshctl", "execute", "-", input=lines, check=0).records
    assert [r["role"] for r in records] == ["groomer", "triage", "research"]
    assert [t["id"] for t in _queued(mesh_home, "groomer")] == ["g1"]
    assert len(_index(mesh_home)) == 3


@pytest.mark.parametrize("bad, message", [
    ('{"prompt": "fix it", "role": "wizard"}', "stdin line 2: unknown role 'wizard'"),
    ("{not json", "stdin line 2: malformed JSON"),
    ('{"prompt": "@builder"}', "stdin line 2: empty task"),
    ('{"prompt": "fix a.py", "id": "g1"}', "stdin lines 1 and 2: the same task id 'g1'"),
])
def test_one_bad_line_enqueues_nothing(run, repo, mesh_home, bad, message):
    lines = f'{{"prompt": "groom the backlog", "id": "g1"}}\n{bad}\ncut the release\n'
    result = run("meshctl", "execute", "-", input=lines, check=65)
    assert message in result.stderr and result.stdout == ""
    assert _index(mesh_home) == {}


def test_usage_errors(run, repo, mesh_home):
    run("meshctl", "execute", "--dry-run", "--wait", "fix it", check=64)
    run("meshctl", "execute", "--timeout", "5", "fix it", check=64)
    run("meshctl", "execute", "--wait", "-", input="fix it\n", check=64)


def _follow(run, mesh_home, prompt, *extra):
    """execute --wait PROMPT for a builder in the background, a burst worker to run it;
    (execute's exit status, its records)."""
    waiting = subprocess.Popen([os.path.join(BIN, "meshctl"), "execute", "--role", "builder",
                                "--id", "w1", "--wait", *extra, prompt],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (mesh_home / "redis" / "redis.pid").exists()
                   and _index(mesh_home).get("w1") == "queued", timeout=30)
        run("queue-drain", "--queue", "builder", "--agent", "shell", "--burst", check=0)
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
        waiting.wait()
    return waiting.returncode, [json.loads(line) for line in out.splitlines()], err


def test_wait_follows_the_task_and_prints_its_result(run, repo, mesh_home):
    code, records, err = _follow(run, mesh_home, "echo done here")
    assert code == 0, err
    route, result = records
    assert (route["kind"], route["id"], route["role"]) == ("route", "w1", "builder")
    assert (result["kind"], result["id"], result["status"]) == ("result", "w1", "ok")
    assert result["output"] == "done here\n"


def test_wait_exits_with_a_failing_tasks_exit_code(run, repo, mesh_home):
    code, records, _ = _follow(run, mesh_home, "exit 3", )
    assert code == 3 and records[-1]["status"] != "ok" and records[-1]["exit_code"] == 3


def test_wait_gives_up_after_its_timeout(run, repo, mesh_home):
    result = run("meshctl", "execute", "--role", "builder", "--wait", "--timeout", "0.5",
                 "true", check=75)
    assert "has no result after 0.5s" in result.stderr


def test_wait_on_a_terminal_keeps_one_live_line_on_stderr(repo, mesh_home):
    """stderr on a terminal: the line is rewritten in place (\\r, clear to its end) and
    cleared before the command ends; no worker here, so the task stays queued."""
    parent, child = pty.openpty()
    proc = subprocess.Popen([os.path.join(BIN, "meshctl"), "execute", "--role", "builder",
                             "--id", "w2", "--wait", "--timeout", "1.5", "true"],
                            stdout=subprocess.PIPE, stderr=child, text=True)
    os.close(child)
    shown = read_terminal(parent)
    assert proc.wait(timeout=30) == 75
    proc.stdout.close()
    *updates, last = shown.split(b"\r\x1b[K")
    assert updates[0].startswith(b"meshctl execute: warning: no live worker drains queue builder")
    assert updates[0].count(b"\n") == 1 and len(updates) > 1  # then, a slice (0.5s) later: one
    assert all(re.fullmatch(rb"w2: queued, \d+s", u) for u in updates[1:]), updates
    assert last == b"meshctl: task w2 has no result after 1.5s\r\n"  # cleared first


def test_a_task_run_inside_a_task_is_its_child(run, repo, mesh_home):
    env = {"MESH_TASK": "t-parent", "MESH_TASK_HOPS": "0"}
    [record] = run("meshctl", "execute", "groom the backlog", env=env, check=0).records
    assert (record["hops"], record["parent"], record["judge"]) == (1, "t-parent", False)
    [task] = _queued(mesh_home, "groomer")
    assert (task["hops"], task["parent"]) == (1, "t-parent")


def test_the_loop_guard_judges_then_refuses(run, repo, mesh_home):
    judged = {"MESH_TASK": "t-parent", "MESH_TASK_HOPS": "1"}
    [record] = run("meshctl", "execute", "make it better", env=judged, check=0).records
    assert (record["role"], record["hops"], record["judge"]) == ("anchor", 2, True)
    [task] = _queued(mesh_home, "anchor")
    assert task["judge"] is True and task["prompt"].startswith("[For the anchor's own judgement]")
    again = {"MESH_TASK": task["id"], "MESH_TASK_HOPS": "2"}
    refused = run("meshctl", "execute", "make it better", env=again, check=77)
    assert "not handed on to the anchor again" in refused.stderr
    run("meshctl", "execute", "--role", "anchor", "make it better", env=again, check=77)
    run("meshctl", "execute", "groom the backlog", env=again, check=0)  # a specialist may
    assert len(_queued(mesh_home, "anchor")) == 1
    bad = {"MESH_TASK": "t-parent", "MESH_TASK_HOPS": "lots"}
    run("meshctl", "execute", "groom the backlog", env=bad, check=78)


def test_enqueuing_where_no_live_worker_drains_warns_in_one_line(run, repo, mesh_home):
    """A dead anchor-1 is named; a queue with a live worker gets no warning."""
    register_dead(run, "anchor", "anchor-1")
    sent = run("meshctl", "execute", "--role", "anchor", "look around", check=0)
    assert sent.stderr.splitlines() == [
        "meshctl execute: warning: no live worker drains queue anchor (anchor-1 is dead): the "
        "task waits until one runs (meshctl init, or mesh-spawn anchor --queue)"]
    assert len(sent.records) == 1
    worker = spawn_worker(run)
    try:
        def drained() -> bool:
            stats = run("queue-stat", "--json", check=0).records
            return any(c.get("alive") for q in stats if q.get("queue") == "builder"
                       for c in q.get("consumers") or [])

        wait_until(drained, timeout=30)
        assert run("meshctl", "execute", "--role", "builder", "true", check=0).stderr == ""
    finally:
        kill_tree(worker["pid"])
