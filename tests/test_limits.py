"""Which limit ended an agent run, and what the queue does about it (issue 17, items 5 and
11): a subscription's window or a spend limit pauses the mesh and hands the task back; a
plain rate limit backs that task off and the mesh runs on; the records of a run agree with
each other. Through queue-drain and mesh-agent, with the stand-in CLI's shapes of 2.1.337."""

import calendar
import json
import os
import signal
import subprocess
import time

import pytest

from meshtools.executors import steps

from .helpers import calls, file_events, redis_events, redis_of, wait_until

FAST_RETRY = "[retry]\nbase = 0.2\ncap = 1.0\n"  # seconds: the backoff, kept short here


def drain(run, tmp_path, *args):
    return run("queue-drain", "--agent", "claude", "--queue", "builder", *args,
               "--workdir", str(tmp_path), check=0).records


def trace_starts(mesh_home, task_id):
    path = mesh_home / "tasks" / task_id / "stream.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines())
            if r.get("type") == "trace" and r.get("subtype") == "start"]


@pytest.mark.parametrize("shape", ["rate_limit_api", "rate_limit_server"])
def test_a_plain_rate_limit_backs_the_task_off_and_leaves_the_mesh_running(
        run, claude_cli, tmp_path, mesh_home, shape):
    """An API key's 429 (no rate_limit_event, after the CLI's own retries), and a
    subscription's 429 without the unified headers ("not your usage limit", no resetsAt),
    paused the whole mesh for 300 s. Now the task waits its jittered backoff and runs again
    (an attempt like any failure's); the other task runs; no pause; the result and the
    event say it was a rate limit."""
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text(FAST_RETRY)
    run("queue-push", "--role", "builder", "--id", "t1", "--max-attempts", "2",
        f"@fail {shape}\nhello", check=0)
    run("queue-push", "--role", "builder", "--id", "t2", "second", check=0)
    drained = drain(run, tmp_path, "--burst")

    first, last = [r for r in drained if r["id"] == "t1"]
    for r in (first, last):
        assert (r["status"], r["error"]) == ("rate_limited", "rate_limit")
        assert "resets_at" not in r and not r.get("handed_back")
    assert (first["attempt"], first["retry"]) == (1, True)
    assert 0.1 <= first["backoff"] <= 0.2  # base·2^(attempt-1), a random half to all of it
    assert last["attempt"] == 2 and "retry" not in last
    [dead] = run("queue-dead", "list", check=0).records
    assert (dead["id"], dead["reason"]) == ("t1", "rate_limited on attempt 2 of 2")
    assert [r["status"] for r in drained if r["id"] == "t2"] == ["ok"]
    assert len(calls(claude_cli)) == 3
    assert redis_events(mesh_home, "mesh.paused") == []
    assert redis_of(mesh_home).get("mesh:paused") is None
    events = file_events(mesh_home, "agent.rate_limited")
    assert [(e["status"], e["error"]) for e in events] == [("rate_limited", "rate_limit")] * 2
    assert file_events(mesh_home, "agent.usage_limited") == []


def test_a_stop_ends_a_backoff_and_the_task_goes_back_at_once(run, claude_cli, tmp_path,
                                                               mesh_home):
    """A worker waiting out a long backoff stops on SIGTERM at once; the task is queued
    again, not lost, and its run's record says it was rate-limited."""
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text("[retry]\nbase = 600\ncap = 600\n")
    run("queue-push", "--role", "builder", "--id", "t1", "@fail rate_limit_api", check=0)
    worker = subprocess.Popen(["queue-drain", "--agent", "claude", "--queue", "builder",
                               "--workdir", str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "CLAUDE_CODE_MAX_RETRIES": "1"})
    try:
        trace = mesh_home / "tasks" / "t1" / "stream.jsonl"
        wait_until(lambda: trace.exists() and '"subtype":"end"' in trace.read_text(),
                   timeout=30)
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)  # not the 300-600 s of the backoff
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 143
    [record] = [json.loads(line) for line in out.splitlines()]
    assert (record["status"], record["retry"]) == ("rate_limited", True)
    assert 300 <= record["backoff"] <= 600
    r = redis_of(mesh_home)
    assert r.xlen("tasks:queue:builder") == 1 and r.hget("tasks:index", "t1") == "queued"
    assert r.get("mesh:paused") is None


def test_a_spend_limit_pauses_the_mesh_until_access_returns(run, claude_cli, tmp_path,
                                                            mesh_home):
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 40 * 86400))
    run("queue-push", "--role", "builder", "--id", "t1", f"@fail spend_limit {day}", check=0)
    [record] = drain(run, tmp_path, "--once")
    assert (record["status"], record["error"]) == ("usage_limited", "spend_limit")
    assert record["handed_back"]
    regain = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    assert record["resets_at"] == regain
    held = json.loads(redis_of(mesh_home).get("mesh:paused"))
    assert (held["reason"], held["until"]) == ("spend_limit", regain)
    [event] = file_events(mesh_home, "agent.usage_limited")
    assert (event["status"], event["error"]) == ("usage_limited", "spend_limit")
    run("queue-resume", check=0)


def test_a_usage_window_records_agree(run, claude_cli, tmp_path, mesh_home):
    """After a usage-limit hand-back the trace's header said "attempt 2" where the result
    said attempt 1, and agent.usage_limited said `status: failed` (issue 17 item 11)."""
    run("queue-stat", check=0)  # the mesh's Redis is up before the clock starts
    resets = int(time.time()) + 8  # the first run must start before (a loaded machine)
    run("queue-push", "--role", "builder", "--id", "t1", f"@fail rate_limit {resets}\nhello",
        check=0)
    drained = drain(run, tmp_path, "--burst")
    assert [(r["status"], r.get("error")) for r in drained] == [
        ("usage_limited", "usage_limit"), ("ok", None)]
    assert all(r["attempt"] == 1 for r in drained)
    starts = trace_starts(mesh_home, "t1")
    assert [(s["attempt"], s["run"]) for s in starts] == [(1, 1), (1, 2)]
    headers = [line[9:] for line in steps.render(steps.steps(starts))]
    assert headers == ["── t1 attempt 1 · claude · builder",
                       "── t1 attempt 1 (run 2) · claude · builder"]
    [limited] = file_events(mesh_home, "agent.usage_limited")
    assert (limited["status"], limited["error"], limited["resets_at"]) == (
        "usage_limited", "usage_limit", resets)
    [paused] = redis_events(mesh_home, "mesh.paused")
    assert paused["reason"] == "usage_limit"


def test_a_retried_tasks_trace_counts_its_attempts(run, claude_cli, tmp_path, mesh_home):
    run("queue-push", "--role", "builder", "--id", "t1", "--max-attempts", "2",
        "@fail max_turns", check=0)
    drained = drain(run, tmp_path, "--burst")
    assert [r["attempt"] for r in drained] == [1, 2]
    assert [(s["attempt"], s["run"]) for s in trace_starts(mesh_home, "t1")] == [(1, 1), (2, 2)]


def test_agent_started_names_the_model_the_init_resolved(run, claude_cli, tmp_path, mesh_home):
    """agent.started named the role's alias (`sonnet`) where system/init gave the model."""
    record = run("mesh-agent", "research", "hello", "--workdir", str(tmp_path),
                 check=0).records[0]
    [started] = file_events(mesh_home, "agent.started")
    [done] = file_events(mesh_home, "agent.done")
    assert started["model"] == done["model"] == record["model"]
    assert record["model"].startswith("claude-")  # not the alias
    assert started["claude_session"] == record["session_id"]


def test_an_async_subagent_run_keeps_the_main_loops_totals_and_both_costs(
        run, claude_cli, tmp_path, mesh_home):
    """Two system/init and two result lines: the totals were the later result's (the
    notification turn's)."""
    run("queue-push", "--role", "builder", "--id", "t1", "@cost 0.1\nmain answer\n"
        "@bash true\n@async-agent 0.05", check=0)
    [record] = drain(run, tmp_path, "--once")
    assert (record["status"], record["output"], record["turns"]) == ("ok", "Using Bash.", 2)
    assert record["tokens"]["cache_read"] > 0
    assert record["cost_usd"] == 0.15 and record["costs_usd"] == [0.15, 0.15]


def test_mesh_agent_says_rate_limited_and_exits_75(run, claude_cli, tmp_path, mesh_home):
    result = run("mesh-agent", "research", "@fail rate_limit_api", "--workdir", str(tmp_path),
                 env={"CLAUDE_CODE_MAX_RETRIES": "2"})
    [record] = result.records
    assert result.returncode == 75
    assert (record["status"], record["error"], record["api_retries"]) == (
        "rate_limited", "rate_limit", 2)
    assert "resets_at" not in record and "paused" not in record


def test_the_trace_says_a_rejection_without_resetsAt_is_no_window():
    records = [{"type": "rate_limit_event", "rate_limit_info": {"status": "rejected"}},
               {"type": "rate_limit_event", "rate_limit_info": {"status": "rejected",
                                                                "resetsAt": 1700003600}}]
    assert [line[9:] for line in steps.render(steps.steps(records))] == [
        "limit    rate limit rejected", "limit    usage limit rejected, resets at 1700003600"]
