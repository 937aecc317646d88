"""meshctl trace and the per-task stream records (MESH_HOME/tasks/<id>/): real workers, the
stand-in `claude` (tests/fakes), a real Redis, real files followed while they grow."""

import json
import os
import signal
import stat
import subprocess

from meshtools.core.home import MeshHome
from meshtools.executors import steps
from meshtools.landing import work

from .helpers import (gone, on_terminal, redis_of, session_record, spawn, stop_tree,
                      wait_for_output, wait_until)

SECRET = "ant-" + "A1b2" * 8  # printed as "sk-" + SECRET: the prompt itself holds no secret


def drain_claude(run, tmp_path, env=None):
    return run("queue-drain", "--agent", "claude", "--queue", "builder", "--once",
               "--workdir", str(tmp_path), env=env, check=0).records


def stream_of(mesh_home, task_id):
    return mesh_home / "tasks" / task_id / "stream.jsonl"


def records_of(mesh_home, task_id):
    return [json.loads(line) for line in stream_of(mesh_home, task_id).read_text().splitlines()]


def test_a_claude_run_is_kept_redacted_and_shown_as_steps(run, claude_cli, tmp_path, mesh_home):
    prompt = (f"let me look\n@bash printf 'sk-%s' {SECRET}\n@write notes.txt hello\n"
              "@bash echo \"$MESH_TASK/$MESH_TASK_HOPS\"\n@cost 0.25\nall done")
    run("queue-push", "--role", "builder", "--id", "c1", prompt, check=0)
    drain_claude(run, tmp_path)

    path = stream_of(mesh_home, "c1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert "sk-" + SECRET not in path.read_text() and "[redacted]" in path.read_text()

    records = run("meshctl", "trace", "c1", "--json", check=0).records
    assert records == records_of(mesh_home, "c1")
    start, end = records[0], records[-1]
    assert (start["type"], start["subtype"], start["task"], start["attempt"]) == (
        "trace", "start", "c1", 1)
    assert start["agent"] == "claude" and start["role"] == "builder" and start["ts"]
    assert [r["type"] for r in records[1:3]] == ["system", "rate_limit_event"]
    assert records[-2]["type"] == "result" and records[-2]["total_cost_usd"] == 0.25
    assert (end["subtype"], end["status"], end["exit_code"]) == ("end", "ok", 0)

    code, shown, err = on_terminal(["meshctl", "trace", "c1"])
    lines = shown.replace("\r\n", "\n").splitlines()
    assert code == 0 and err == ""
    assert any(line.endswith("text     let me look") for line in lines)
    assert any(line.endswith(f"tool     Write {tmp_path}/notes.txt") for line in lines)
    assert any(line.endswith(f"tool     Bash printf 'sk-%s' {SECRET}") for line in lines)
    assert any(line.endswith("✔ [redacted]") for line in lines)
    assert any(line.endswith("✔ c1/0") for line in lines)  # MESH_TASK, MESH_TASK_HOPS
    assert any("result   ok · $0.2500 · 4 turns" in line and line.endswith(": all done")
               for line in lines)
    assert lines[0].endswith("── c1 attempt 1 · claude · builder")
    assert lines[-1].split(" ", 1)[1].startswith("── end ok (exit 0, ")


def test_each_attempt_is_a_run_of_its_own(run, claude_cli, tmp_path, mesh_home):
    run("queue-push", "--role", "builder", "--id", "c2", "--max-attempts", "2",
        "trying\n@exit 3", check=0)
    drain_claude(run, tmp_path)
    drain_claude(run, tmp_path)
    records = records_of(mesh_home, "c2")
    starts = [r for r in records if r.get("subtype") == "start"]
    ends = [r for r in records if r.get("subtype") == "end"]
    assert [s["attempt"] for s in starts] == [1, 2]
    assert [(e["status"], e["exit_code"]) for e in ends] == [("failed", 3), ("failed", 3)]


def test_a_shell_task_is_traced_with_its_environment(run, mesh_home, tmp_path):
    task = {"id": "s1", "prompt": 'echo "$MESH_TASK $MESH_TASK_HOPS"; echo second', "hops": 2}
    run("queue-push", "-", input=json.dumps(task) + "\n", check=0)
    [result] = run("queue-drain", "--once", "--workdir", str(tmp_path), check=0).records
    assert result["output"] == "s1 2\nsecond\n"
    records = run("meshctl", "trace", "s1", check=0).records  # piped: the records
    assert [r.get("text") for r in records if r["type"] == "output"] == ["s1 2", "second"]
    assert records[0]["agent"] == "shell" and records[0]["hops"] == 2
    assert records[-1]["status"] == "ok"
    code, shown, _ = on_terminal(["meshctl", "trace", "s1"])
    assert code == 0 and "out      s1 2" in shown and "── end ok (exit 0" in shown


def test_a_configured_text_agent_gets_the_task_environment(run, mesh_home, tmp_path):
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text(
        '[agents.echoer]\ncommand = ["sh", "-c", "echo $MESH_TASK $MESH_TASK_HOPS: $0", '
        '"{prompt}"]\noutput = "text"\n')
    run("queue-push", "--role", "research", "--id", "e1", "hi", check=0)
    run("queue-drain", "--agent", "echoer", "--queue", "research", "--once",
        "--workdir", str(tmp_path), check=0)
    outputs = [r["text"] for r in records_of(mesh_home, "e1") if r["type"] == "output"]
    assert outputs == ["e1 0: hi"]


def test_past_the_cap_lines_are_counted_not_kept_but_the_result_is(run, claude_cli, tmp_path,
                                                                   mesh_home):
    prompt = "\n".join(f"line {i} " + "x" * 200 for i in range(100)) + "\n@cost 0.5\nlast"
    run("queue-push", "--role", "builder", "--id", "big", prompt, check=0)
    drain_claude(run, tmp_path, env={"MESH_TRACE_MAX_BYTES": "8000"})
    records = records_of(mesh_home, "big")
    truncated = [r for r in records if r.get("subtype") == "truncated"]
    assert len(truncated) == 1 and truncated[0]["max_bytes"] == 8000
    assert [r["type"] for r in records[-2:]] == ["result", "trace"]
    assert records[-2]["total_cost_usd"] == 0.5 and records[-2]["result"] == "last"
    end = records[-1]
    assert end["skipped_lines"] > 50 and end["skipped_bytes"] > 50 * 200
    texts = [r for r in records if r["type"] == "assistant"]
    assert 0 < len(texts) < 40
    kept = stream_of(mesh_home, "big").stat().st_size
    last_two = sum(len(json.dumps(r, separators=(",", ":"), ensure_ascii=False)) + 1
                   for r in records[-2:])
    assert kept <= 8000 + 200 + last_two  # the cap, the marker, the result and the end
    code, shown, _ = on_terminal(["meshctl", "trace", "big"])
    assert "… trace cut at 8000 bytes" in shown and "lines past the cap" in shown


def test_follow_sees_the_lines_while_the_task_runs(run, claude_cli, tmp_path, mesh_home):
    release = tmp_path / "release"
    run("queue-push", "--role", "builder", "--id", "f1",
        f"first words\n@bash while [ ! -e {release} ]; do sleep 0.05; done\nlast words",
        check=0)
    worker = subprocess.Popen(["queue-drain", "--agent", "claude", "--queue", "builder",
                               "--once", "--workdir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: stream_of(mesh_home, "f1").exists()
                   and "first words" in stream_of(mesh_home, "f1").read_text(), timeout=30)
        follower = subprocess.Popen(["meshctl", "trace", "f1", "--follow", "--json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = wait_for_output(follower.stdout, '"tool_use"', timeout=30)
        assert follower.poll() is None and "last words" not in seen  # still following
        release.touch()
        rest, err = follower.communicate(timeout=30)
        assert follower.returncode == 0 and err == b""
        records = [json.loads(line) for line in (seen.encode() + rest).splitlines()]
        assert records == records_of(mesh_home, "f1")
        assert records[-2]["result"] == "last words" and records[-1]["subtype"] == "end"
    finally:
        worker.wait(timeout=30)
    again = run("meshctl", "trace", "f1", "--follow", "--json", check=0)  # ended: no wait
    assert again.records[-1]["subtype"] == "end"


def test_trace_peer_follows_what_a_spawned_worker_runs(run, repo, tmp_path):
    record = spawn(run, "builder", "--queue", "--agent", "shell", "--detach").records[-1]
    follower = None
    try:
        wait_until(lambda: session_record(run, "builder-1")["phase"] == "waiting", timeout=30)
        follower = subprocess.Popen(["meshctl", "trace", "builder-1", "--json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_output(follower.stdout, '"subtype":"waiting"', timeout=30)
        release = tmp_path / "release"
        run("queue-push", "--role", "builder", "--id", "p1",
            f"echo first words; while [ ! -e {release} ]; do sleep 0.05; done; echo last",
            check=0)
        seen = wait_for_output(follower.stdout, "first words", timeout=30)
        assert '"subtype":"start","ts"' in seen and '"task":"p1"' in seen
        release.touch()
        seen = wait_for_output(follower.stdout, '"subtype":"waiting"', timeout=30)
        assert '"text":"last"' in seen and '"subtype":"end"' in seen
        run("queue-push", "--role", "builder", "--id", "p2", "echo the next one", check=0)
        seen = wait_for_output(follower.stdout, '"subtype":"waiting"', timeout=30)
        assert '"task":"p2"' in seen and '"text":"the next one"' in seen
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=30)
        assert follower.returncode == 130 and err == b""  # ^C: quietly
        now = run("meshctl", "trace", "builder-1", "--no-follow", check=0).records
        assert [r["subtype"] for r in now] == ["waiting"]
        code, shown, _ = on_terminal(["meshctl", "trace", "builder-1", "--no-follow"])
        assert code == 0 and shown.strip().endswith("builder-1 is waiting for a task")
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        assert gone(stop_tree(record["pid"]))


def test_following_a_queued_task_waits_for_its_run(run, mesh_home, tmp_path):
    """--follow on a task pushed but not yet taken said "no trace" (65) at once."""
    run("queue-push", "--id", "later", "echo ran", check=0)
    redis = redis_of(mesh_home)
    clients = len(redis.client_list())
    follower = subprocess.Popen(["meshctl", "trace", "later", "--follow", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # it found no trace and asked Redis about the task: now it waits for the run
        wait_until(lambda: len(redis.client_list()) > clients, timeout=30)
        assert follower.poll() is None
        run("queue-drain", "--once", "--workdir", str(tmp_path), check=0)
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert records == records_of(mesh_home, "later") and records[-1]["subtype"] == "end"
    never = run("meshctl", "trace", "never-pushed", "--follow")
    assert never.returncode == 65 and "no trace for task never-pushed" in never.stderr


def test_unknown_task_is_65_with_a_hint(run, mesh_home, tmp_path):
    run("queue-push", "--id", "build-7", "true", check=0)
    run("queue-drain", "--once", "--workdir", str(tmp_path), check=0)
    missing = run("meshctl", "trace", "build-8")
    assert missing.returncode == 65 and missing.stdout == ""
    assert missing.stderr == "meshctl: no trace for task build-8; did you mean 'build-7'?\n"
    bad = run("meshctl", "trace", "../etc")
    assert bad.returncode == 65 and bad.stderr == "meshctl: no trace for task ../etc\n"


def test_task_work_lives_in_the_task_directory(mesh_home):
    home = MeshHome(str(mesh_home))
    work.record_task_work(home, "w1", "builder", work.work_range("mesh/builder", "a", "b"))
    assert json.loads((mesh_home / "tasks" / "w1" / "work.json").read_text())["head"] == "b"
    assert work.load_task_work(home, "w1")["base"] == "a"
    assert not (mesh_home / "tasks" / "w1.json").exists()


# --- steps (pure) ----------------------------------------------------------------------------

def test_steps_name_failures_retries_and_limits():
    records = [
        {"type": "system", "subtype": "api_retry", "attempt": 2, "max_retries": 10,
         "error": "overloaded", "ts": "2026-01-01T10:00:01.000Z"},
        {"type": "rate_limit_event", "rate_limit_info": {"status": "allowed"}},
        {"type": "rate_limit_event", "rate_limit_info": {"status": "rejected",
                                                         "resetsAt": 1700003600}},
        {"type": "assistant", "error": "rate_limit", "message": {"content": [
            {"type": "text", "text": "You've hit your limit\nmore"}]}},
        {"type": "user", "message": {"content": [
            {"type": "tool_result", "is_error": True,
             "content": [{"type": "text", "text": "boom\ntrace"}]}]}},
        {"type": "assistant", "message": {"content": [
            {"type": "tool_use", "name": "Grep", "input": {"pattern": "x" * 200}}]}},
        {"type": "result", "subtype": "error_max_turns", "is_error": True, "num_turns": 40,
         "errors": ["Reached maximum number of turns (40)"], "duration_ms": 1500},
    ]
    found = steps.steps(records)
    assert [s["step"] for s in found] == ["retry", "rate_limit", "text", "error",
                                          "tool_result", "tool", "result"]
    assert found[-1]["error"] == "max_turns" and found[-1]["status"] == "failed"
    lines = [line[9:] for line in steps.render(found)]
    assert lines[0] == "retry    2/10: overloaded"
    assert lines[2] == "text     You've hit your limit …"
    assert lines[4] == "         ✘ boom …"
    assert lines[5].startswith("tool     Grep xxx") and lines[5].endswith("…")
    assert len(lines[5]) == len("tool     Grep ") + steps.INPUT_WIDTH
    assert lines[6] == ("result   failed (max_turns) · 40 turns · 1.5s: "
                        "Reached maximum number of turns (40)")
    assert steps.render(found)[0].startswith("10:00:01 ")


def test_a_bad_cap_is_78_before_any_task_is_taken(run, mesh_home):
    run("queue-push", "--id", "n1", "true", check=0)
    bad = run("queue-drain", "--once", env={"MESH_TRACE_MAX_BYTES": "2M"})
    assert bad.returncode == 78 and bad.stderr == (
        "queue-drain: $MESH_TRACE_MAX_BYTES: expected a whole number of bytes, got '2M'\n")
    assert run("queue-stat", check=0).records[0]["length"] == 1


def test_trace_peer_follows_a_persistent_agents_run(run, claude_cli, tmp_path, anchor_process):
    run("coord-register", "--role", "builder", "--id", "r1", "--pid",
        str(anchor_process().pid), check=0)
    release = tmp_path / "release"
    agent = subprocess.Popen(
        ["mesh-agent", "builder", "--as", "r1", "--workdir", str(tmp_path),
         f"first words\n@bash while [ ! -e {release} ]; do sleep 0.05; done\nlast words"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    follower = subprocess.Popen(["meshctl", "trace", "r1", "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    try:
        first = wait_for_output(follower.stdout, '"tool_use"', timeout=30)
        assert '"subtype":"start"' in first and '"session":"r1"' in first
        assert "first words" in first and "last words" not in first
        release.touch()
        seen = wait_for_output(follower.stdout, '"subtype":"waiting"', timeout=30)
        assert '"result":"last words"' in seen and '"subtype":"end"' in seen
        [result] = [json.loads(line) for line in agent.communicate(timeout=30)[0].splitlines()]
        peer = next(r for r in run("coord-peers", check=0).records if r["id"] == "r1")
        assert peer["phase"] == "done" and peer.get("task") is None  # its own phase stays
        assert f'"task":"{result["id"]}"' in first
    finally:
        for proc in (follower, agent):
            proc.kill()
            proc.wait()


def test_only_the_newest_tasks_traces_are_kept(mesh_home, monkeypatch):
    from meshtools.executors import trace

    home = MeshHome(str(mesh_home))
    work.record_task_work(home, "k4", "builder", work.work_range("mesh/builder", "a", "b"))
    for n in range(5):
        trace.Writer.open(home, {"id": f"k{n}"}, agent="shell").close()
        age = (5 - n) * 10**9  # k4 the oldest: the last write decides, not the name
        os.utime(stream_of(mesh_home, f"k{n}"), ns=(age, age))
    monkeypatch.setattr(trace, "KEEP_TASKS", 3)
    trace.Writer.open(home, {"id": "k5"}, agent="shell").close()
    assert trace.known_tasks(home) == ["k0", "k1", "k5"]
    assert (mesh_home / "tasks" / "k4" / "work.json").exists()  # landing still needs it
    assert not (mesh_home / "tasks" / "k3").exists()


def test_a_peers_run_over_between_two_looks_is_still_shown(run, mesh_home, anchor_process):
    from meshtools.coord.sessions import task_reporter
    from meshtools.executors import trace
    from meshtools.queue.outcome import Outcome

    anchor = anchor_process()
    run("coord-register", "--role", "builder", "--id", "b1", "--pid", str(anchor.pid), check=0)
    home, report = MeshHome(str(mesh_home)), task_reporter(MeshHome(str(mesh_home)), "b1")
    follower = trace.follow_peer(home, "b1")
    assert next(follower)["subtype"] == "waiting"
    report("q1")  # a whole run before the follower looks again
    writer = trace.Writer.open(home, {"id": "q1"}, agent="shell", session="b1")
    writer.output("quick\n")
    writer.end(Outcome("ok", 0, "quick\n", 0.01))
    report(None)
    anchor.kill()  # and the peer is gone: what it did comes first, then that it left
    anchor.wait()
    shown = list(follower)
    assert [(r["type"], r.get("subtype")) for r in shown] == [
        ("trace", "start"), ("output", None), ("trace", "end"), ("trace", "left")]
    assert shown[0]["task"] == "q1" and shown[1]["text"] == "quick"
