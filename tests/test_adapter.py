"""The agent executors end to end: real processes, the stand-in `claude` on PATH (tests/fakes),
a real Redis for the queue, a real git repository and the real file-lock hook."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from meshtools.executors.base import compose_prompt
from meshtools.executors.claude import claude_argv
from meshtools.core.roles import Role
from meshtools.core import proc
from meshtools.queue import pause

from .helpers import BIN, calls, FAKES, file_events, redis_events, redis_of, wait_until


def register(run, pid, sid, role="builder"):
    run("coord-register", "--role", role, "--id", sid, "--pid", str(pid), check=0)


ROLE = Role(name="research", description="d", model="haiku", queue="research",
            charter="Read only.", prompt="p", tools=("Read", "Grep"),
            disallowed_tools=("Edit", "Bash(git push *)"), max_budget_usd=2.0)


# --- argv (pure) ---------------------------------------------------------------------------

def test_claude_argv_is_headless_stream_json_with_the_roles_boundaries():
    argv = claude_argv(ROLE, "hello", session_id="6f1b0b5e-8d9a-4b8e-9c0e-1a2b3c4d5e6f")
    assert argv[:5] == ["claude", "-p", "--output-format=stream-json", "--verbose",
                        "--model=haiku"]
    assert "--permission-mode=acceptEdits" in argv
    assert "--tools=Read,Grep" in argv and "--disallowedTools=Edit,Bash(git push *)" in argv
    assert "--append-system-prompt=Read only." in argv and "--max-budget-usd=2" in argv
    assert "--session-id=6f1b0b5e-8d9a-4b8e-9c0e-1a2b3c4d5e6f" in argv
    assert "hello" not in argv  # the prompt goes on stdin
    assert claude_argv(ROLE, "hi", prompt_on_stdin=False)[-2:] == ["--", "hi"]
    every = Role(name="b", description="d", model="sonnet", queue="b", charter="c", prompt="p")
    flat = claude_argv(every, "x", command=["my-claude", "--x"])
    assert flat[:2] == ["my-claude", "--x"]
    assert not any(a.startswith(("--tools", "--disallowedTools", "--max-budget")) for a in flat)


def test_compose_prompt_puts_peers_messages_first():
    text = compose_prompt([{"from": "anchor-1", "body": "rebase on main"},
                           {"from": "b2", "data": {"n": 1}}], "fix it")
    assert text == ('Messages from your peers:\n- from anchor-1: rebase on main\n'
                    '- from b2: {"n": 1}\n\nTask:\nfix it')
    assert compose_prompt([], "fix it") == "fix it"


# --- mesh-agent ----------------------------------------------------------------------------

def test_flags_reach_the_cli_and_the_roles_tools_bind(run, claude_cli, tmp_path):
    record = run("mesh-agent", "research", "hello\n@write notes.md x", "--workdir",
                 str(tmp_path), check=0).records[0]
    assert record["status"] == "ok" and record["role"] == "research"
    [call] = calls(claude_cli)
    argv = call["argv"]
    assert "-p" in argv and "--output-format=stream-json" in argv and "--verbose" in argv
    assert "--model=sonnet" in argv
    assert "--tools=Read,Grep,Glob,WebSearch,WebFetch" in argv
    assert "--disallowedTools=Edit,Write,MultiEdit,NotebookEdit,Bash" in argv
    assert any(a.startswith("--append-system-prompt=You are the research role") for a in argv)
    assert call["prompt"] == "hello\n@write notes.md x" and call["cwd"] == str(tmp_path)
    assert call["MESH_ROLE"] == "research"
    assert not (tmp_path / "notes.md").exists()  # Write does not exist for research


def test_a_run_reports_cost_turns_session_and_phases(run, claude_cli, repo, mesh_home,
                                                     anchor_process):
    register(run, anchor_process().pid, "b1")
    record_file = "$MESH_HOME/sessions/b1/session.json"
    look = (f"for i in $(seq 100); do grep -q '\"phase\":\"tool Bash\"' {record_file} && break;"
            f" sleep 0.05; done; cp {record_file} seen.json")  # the beat lands while it runs
    prompt = f"let me look\n@bash {look}\n@cost 0.25\nall done"
    record = run("mesh-agent", "builder", prompt, "--as", "b1", check=0).records[0]
    worktree = repo.parent / f"{repo.name}-wt-builder"  # a writing role works in its worktree
    assert record["status"] == "ok" and record["exit_code"] == 0
    assert record["cost_usd"] == 0.25 and record["turns"] == 2
    assert record["output"] == "all done" and record["tokens"]["output"] > 0
    assert len(record["session_id"]) == 36 and record["session"] == "b1"
    assert record["phases"] == ["starting", "thinking", "tool Bash", "thinking", "done"]
    # the registry followed the agent: mid-run it said which tool, at the end "done"
    assert json.loads((worktree / "seen.json").read_text())["phase"] == "tool Bash"
    peers = {r["id"]: r for r in run("coord-peers", check=0).records}
    assert peers["b1"]["phase"] == "done"
    assert calls(claude_cli)[0]["MESH_SESSION"] == "b1"
    names = [e["event"] for e in file_events(mesh_home, "agent.")]
    assert names == ["agent.started", "agent.tool", "agent.done"]
    assert "@bash" not in json.dumps(file_events(mesh_home, "agent.done"))


def test_the_lock_gate_hook_denies_then_allows(run, claude_cli, repo, anchor_process):
    register(run, anchor_process().pid, "b1")
    # the builder's worktree, where mesh-agent runs it, carries the gate (mesh-worktree)
    target = repo.parent / f"{repo.name}-wt-builder" / "crates" / "core" / "src" / "lib.rs"
    denied = run("mesh-agent", "builder", "@write crates/core/src/lib.rs x", "--as", "b1",
                 check=0).records[0]
    assert target.read_text() == "pub fn f() {}\n"
    assert denied["status"] == "ok"  # a denied tool is not a failed run...
    assert denied["permission_denials"] == [{"tool": "Write", "tool_use_id":
                                             denied["permission_denials"][0]["tool_use_id"],
                                             "path": str(target)}]  # ...but it is reported
    run("file-lock", "acquire", "crates/core", "--as", "b1", check=0)
    allowed = run("mesh-agent", "builder", "@write crates/core/src/lib.rs x", "--as", "b1",
                  check=0).records[0]
    assert target.read_text() == "x" and "permission_denials" not in allowed


def test_a_writing_role_never_works_in_the_main_checkout(run, claude_cli, repo,
                                                          anchor_process, monkeypatch):
    """#3: run from the repository, mesh-agent committed straight onto main."""
    from .helpers import git

    main = git(repo, "rev-parse", "HEAD")
    run("coord-register", "--role", "builder", "--id", "b1", "--pid",
        str(anchor_process().pid), check=0)
    monkeypatch.setenv("MESH_SESSION", "b1")  # the gate lets a builder's Bash through
    commit = ("@bash echo more >> docs/guide.md && "
              "git -c user.name=a -c user.email=a@a commit -qam agent")
    for workdir, where in ((repo, "is the main checkout"),
                           (repo / "crates", f"is in {repo}, the main checkout")):
        refused = run("mesh-agent", "builder", commit, "--workdir", str(workdir))
        assert refused.returncode == 77 and f"{workdir} {where}:" in refused.stderr
        assert f"{repo.name}-wt-builder" in refused.stderr and refused.stdout == ""
    assert calls(claude_cli) == []  # nothing started
    record = run("mesh-agent", "builder", commit, check=0).records[0]  # from the repository
    worktree = repo.parent / f"{repo.name}-wt-builder"
    assert record["status"] == "ok" and calls(claude_cli)[0]["cwd"] == str(worktree)
    assert git(repo, "rev-parse", "HEAD") == main  # main did not move...
    assert git(repo, "log", "-1", "--format=%s", "mesh/builder") == "agent"  # ...its branch did
    run("mesh-agent", "research", "read it", check=0)  # a read-only role reads where it is
    assert calls(claude_cli)[1]["cwd"] == str(repo)


def test_startup_watchdog_kills_a_silent_run(run, claude_cli, tmp_path):
    result = run("mesh-agent", "builder", "@hang", "--startup-timeout", "1", "--workdir",
                 str(tmp_path))
    record = result.records[0]
    assert result.returncode == 1
    assert record["status"] == "failed" and record["reason"] == "startup_timeout"
    [call] = calls(claude_cli)
    assert proc.start_time(call["pid"]) is None  # no process left


def test_timeout_kills_the_whole_group(run, claude_cli, tmp_path):
    prompt = "@bash sleep 300 >/dev/null 2>&1 & echo $! > bg.pid\n@sleep 30"
    result = run("mesh-agent", "builder", prompt, "--timeout", "1.5", "--workdir", str(tmp_path))
    assert result.returncode == 1 and result.records[0]["status"] == "timeout"
    background = int((tmp_path / "bg.pid").read_text())
    wait_until(lambda: proc.start_time(background) is None, timeout=5)
    assert proc.start_time(calls(claude_cli)[0]["pid"]) is None


def test_missing_cli_is_69_one_line(run, tmp_path):
    env = {"PATH": BIN}
    for argv in (["mesh-agent", "builder", "hi"],
                 ["queue-drain", "--agent", "claude", "--queue", "builder", "--once"]):
        result = run(*argv, env=env, cwd=str(tmp_path))
        assert result.returncode == 69, (argv, result.stderr)
        assert result.stderr.endswith("claude: command not found (install Claude Code or set "
                                      "[agent] command in config.toml)\n")
        assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_agent_command_can_be_swapped(run, claude_cli, tmp_path):
    env = {"PATH": BIN, "MESH_AGENT_COMMAND": f"{sys.executable} {FAKES}/claude"}
    record = run("mesh-agent", "builder", "hi", "--workdir", str(tmp_path), env=env,
                 check=0).records[0]
    assert record["status"] == "ok" and record["output"] == "hi"


def test_auth_failure_is_recognised(run, claude_cli, tmp_path, mesh_home):
    result = run("mesh-agent", "builder", "@fail auth", "--workdir", str(tmp_path))
    record = result.records[0]
    assert result.returncode == 1 and record["status"] == "failed"
    assert record["error"] == "auth" and record["output"] == "Not logged in · Please run /login"
    assert "paused" not in record  # no Redis running: nothing to pause, nothing started
    assert not (mesh_home / "redis").exists()


def test_inbox_messages_reach_the_prompt(run, claude_cli, tmp_path, anchor_process, mesh_home):
    pid = anchor_process().pid
    register(run, pid, "b1")
    register(run, pid, "a1", role="anchor")
    run("coord-send", "--as", "a1", "b1", "rebase on main", check=0)
    run("mesh-agent", "builder", "fix the test", "--as", "b1", "--workdir", str(tmp_path),
        check=0)
    assert calls(claude_cli)[0]["prompt"] == ("Messages from your peers:\n- from a1: rebase on "
                                              "main\n\nTask:\nfix the test")
    assert run("coord-recv", "--as", "b1", check=0).records == []  # delivered once
    run("mesh-agent", "builder", "again", "--as", "b1", "--workdir", str(tmp_path), check=0)
    assert calls(claude_cli)[1]["prompt"] == "again"


# --- queue-drain --agent ... ----------------------------------------------------------------

def test_unknown_agent_is_a_usage_error_naming_the_known_ones(run, mesh_home):
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text('[agents.echoer]\ncommand = ["echo"]\n')
    result = run("queue-drain", "--agent", "nope", "--once")
    assert result.returncode == 64 and "agents: shell, claude, echoer" in result.stderr
    claude = run("queue-drain", "--agent", "claude", "--queue", "a", "--queue", "b", "--once")
    assert claude.returncode == 64 and "--role" in claude.stderr


def test_agent_names_are_checked_in_one_place_for_every_command(run, mesh_home):
    """queue-drain, mesh-agent and mesh-spawn each had their own check; one answer now, one
    line (no click usage block), shell refused where the agent runs a prompt."""
    from meshtools.core import config
    from meshtools.core.errors import UsageError
    from meshtools.executors.choose import validate_agent

    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text('[agents.echoer]\ncommand = ["echo"]\n')
    settings = config.Section({"agents": {"echoer": {"command": ["echo"], "output": "text"}}})
    assert validate_agent(settings, "echoer") == "echoer"
    with pytest.raises(UsageError, match=r"agents: claude, echoer\)"):
        validate_agent(settings, "shell", shell=False)
    shell = run("mesh-agent", "builder", "hi", "--agent", "shell")
    assert shell.returncode == 64
    assert shell.stderr.strip().splitlines() == [
        "mesh-agent: unknown agent 'shell' (agents: claude, echoer)"]


def test_the_plain_executor_does_not_load_the_claude_one():
    """plain and the claude adapter imported each other; their shared pieces are in base."""
    code = ("import sys, meshtools.executors.plain, meshtools.executors.choose; "
            "print('meshtools.executors.claude' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert found.stdout.strip() == "False"


def test_queue_drain_for_a_writing_role_never_works_in_the_main_checkout(
        run, claude_cli, repo, anchor_process, monkeypatch):
    """A builder's queue worker started in the repository ran its tasks there: onto main."""
    from .helpers import git

    main = git(repo, "rev-parse", "HEAD")
    run("coord-register", "--role", "builder", "--id", "b1", "--pid",
        str(anchor_process().pid), check=0)
    monkeypatch.setenv("MESH_SESSION", "b1")  # the gate lets a builder's Bash through
    run("queue-push", "--role", "builder", "--id", "t1", "@bash echo more >> docs/guide.md "
        "&& git -c user.name=a -c user.email=a@a commit -qam agent", check=0)
    drain = ["queue-drain", "--agent", "claude", "--queue", "builder", "--burst"]
    refused = run(*drain, "--workdir", str(repo))
    assert refused.returncode == 77 and "is the main checkout" in refused.stderr
    assert f"{repo.name}-wt-builder" in refused.stderr and refused.stdout == ""
    assert calls(claude_cli) == []  # nothing started
    [record] = run(*drain, check=0).records  # from the repository
    assert record["status"] == "ok"
    assert calls(claude_cli)[0]["cwd"] == str(repo.parent / f"{repo.name}-wt-builder")
    assert git(repo, "rev-parse", "HEAD") == main  # main did not move...
    assert git(repo, "log", "-1", "--format=%s", "mesh/builder") == "agent"  # ...its branch did
    run("queue-push", "pwd", check=0)
    [shell] = run("queue-drain", "--burst", check=0).records  # no role: where it is
    assert shell["output"] == f"{repo}\n"


def test_configured_text_agent(run, mesh_home, tmp_path):
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text(
        '[agents.echoer]\ncommand = ["sh", "-c", "echo got: $0 as $MESH_ROLE", "{prompt}"]\n'
        'output = "text"\n')
    run("queue-push", "--role", "research", "hello there", check=0)
    [record] = run("queue-drain", "--agent", "echoer", "--queue", "research", "--burst",
                   "--workdir", str(tmp_path), check=0).records
    assert record["status"] == "ok" and record["output"] == "got: hello there as research\n"
    assert record["agent"] == "echoer"


def test_queue_drain_claude_records_the_details(run, claude_cli, tmp_path):
    run("queue-push", "--role", "builder", "--id", "t1", "@cost 0.5\nok", check=0)
    [record] = run("queue-drain", "--agent", "claude", "--queue", "builder", "--burst",
                   "--workdir", str(tmp_path), check=0).records
    assert record["status"] == "ok" and record["cost_usd"] == 0.5 and record["turns"] == 1
    [stored] = run("queue-results", check=0).records
    assert stored["cost_usd"] == 0.5 and stored["session_id"] == record["session_id"]
    assert "--max-budget-usd=5" in calls(claude_cli)[0]["argv"]


def test_usage_limit_hands_back_and_pauses_dispatch_until_the_reset(run, claude_cli, tmp_path,
                                                                    mesh_home):
    run("queue-stat", check=0)  # the mesh's Redis is up before the clock starts (a loaded
    resets = int(time.time()) + 5  # machine took longer than the window to get there)
    run("queue-push", "--role", "builder", "--id", "t1", f"@fail rate_limit {resets}\nhello",
        check=0)
    run("queue-push", "--role", "builder", "--id", "t2", "second", check=0)
    drained = run("queue-drain", "--agent", "claude", "--queue", "builder", "--burst",
                  "--workdir", str(tmp_path), check=0).records
    assert [(r["id"], r["status"]) for r in drained] == [("t1", "usage_limited"), ("t2", "ok"),
                                                         ("t1", "ok")]
    assert drained[0]["handed_back"] and drained[0]["resets_at"] == resets
    started = calls(claude_cli)
    assert started[0]["ts"] < resets <= started[1]["ts"]  # nothing started while paused
    results = {r["id"]: r for r in run("queue-results", check=0).records}
    assert results["t1"]["attempt"] == 1  # the usage-limited run was not an attempt
    assert run("queue-dead", "list", check=0).records == []
    names = [e["event"] for e in redis_events(mesh_home)]
    assert names.index("mesh.paused") < names.index("task.usage_limited") \
        < names.index("mesh.resumed")
    [paused] = redis_events(mesh_home, "mesh.paused")
    assert paused["reason"] == "usage_limit"
    assert redis_of(mesh_home).get("mesh:paused") is None
    assert [e["event"] for e in file_events(mesh_home, "agent.usage_limited")]


def test_paused_mesh_starts_no_agent(run, claude_cli, tmp_path, mesh_home):
    run("queue-push", "--id", "t0", "true", check=0)  # starts the embedded Redis
    from meshtools.queue.names import Names

    pause.Pauses(redis_of(mesh_home), Names()).pause(time.time() + 60, "usage_limit", by="test")
    result = run("mesh-agent", "builder", "hi", "--workdir", str(tmp_path))
    assert result.returncode == 75 and result.records[0]["status"] == "paused"
    assert calls(claude_cli) == []


def test_daily_budget_cap_stops_new_work(run, claude_cli, tmp_path, mesh_home, monkeypatch):
    noon = pause.next_utc_midnight(time.time()) + 12 * 3600  # the test's own day: no midnight
    monkeypatch.setenv("MESH_NOW", str(noon))                 # passes while it runs
    mesh_home.mkdir(parents=True, exist_ok=True)
    (mesh_home / "config.toml").write_text("[budget]\ndaily_usd = 0.05\n")
    for n in range(3):
        run("queue-push", "--role", "builder", "--id", f"t{n}", f"@cost 0.03\nrun {n}", check=0)
    worker = subprocess.Popen(["queue-drain", "--agent", "claude", "--queue", "builder",
                               "--workdir", str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        r = redis_of(mesh_home)
        wait_until(lambda: r.get("mesh:paused") is not None, timeout=20)
        wait_until(lambda: r.xlen("tasks:results") == 2)  # the run that paused it, recorded
        held = json.loads(r.get("mesh:paused"))
        assert held["reason"] == "budget"
        assert held["until"] == pause.next_utc_midnight(noon)
        assert float(r.get(f"mesh:spend:{pause.day(noon)}")) == 0.06
        assert len(calls(claude_cli)) == 2  # the third task was not started
        assert r.xlen("tasks:queue:builder") == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=10)
    assert worker.returncode == 143, err  # stopped by SIGTERM while paused


def test_mesh_now_fixes_the_calendar_only(monkeypatch):
    from meshtools.core import clock
    from meshtools.core.errors import ConfigError

    monkeypatch.setenv("MESH_NOW", "2026-03-01T23:59:59Z")
    assert pause.day(clock.calendar_now()) == "2026-03-01"
    assert clock.calendar_now() == float(clock.parse_iso("2026-03-01T23:59:59Z"))
    assert clock.now() > clock.calendar_now()  # durations and liveness keep the real clock
    monkeypatch.setenv("MESH_NOW", "soon")
    with pytest.raises(ConfigError, match="MESH_NOW"):
        clock.calendar_now()


def test_task_over_its_budget_is_dead_lettered_at_once(run, claude_cli, tmp_path):
    run("queue-push", "--role", "builder", "--id", "pricey", "@cost 9\nspend", check=0)
    [record] = run("queue-drain", "--agent", "claude", "--queue", "builder", "--burst",
                   "--workdir", str(tmp_path), check=0).records
    assert record["status"] == "failed" and record["error"] == "budget"
    [dead] = run("queue-dead", "list", check=0).records
    assert dead["id"] == "pricey" and "budget" in dead["reason"]


def test_auth_failure_through_the_queue_pauses_the_mesh(run, claude_cli, tmp_path, mesh_home):
    run("queue-push", "--role", "builder", "--id", "t1", "@fail auth", check=0)
    [record] = run("queue-drain", "--agent", "claude", "--queue", "builder", "--once",
                   "--workdir", str(tmp_path), check=0).records
    assert record["status"] == "failed" and record["error"] == "auth" and record["retry"]
    r = redis_of(mesh_home)
    assert json.loads(r.get("mesh:paused"))["reason"] == "auth"
    assert 590 < r.ttl("mesh:paused") <= 600


def test_overloaded_is_an_ordinary_failure(run, claude_cli, tmp_path, mesh_home):
    run("queue-push", "--role", "builder", "--id", "t1", "--max-attempts", "1",
        "@fail overloaded", check=0)
    [record] = run("queue-drain", "--agent", "claude", "--queue", "builder", "--burst",
                   "--workdir", str(tmp_path), check=0, env={"CLAUDE_CODE_MAX_RETRIES": "2"}
                   ).records
    assert record["error"] == "overloaded" and record["api_retries"] == 2
    assert redis_of(mesh_home).get("mesh:paused") is None


def test_a_cli_that_vanishes_hands_the_task_back_uncounted(run, claude_cli, tmp_path,
                                                           mesh_home):
    cli_dir = tmp_path / "cli"
    cli_dir.mkdir()
    shutil.copy(f"{FAKES}/claude", cli_dir / "claude")
    worker = subprocess.Popen(["queue-drain", "--agent", "claude", "--queue", "builder",
                               "--workdir", str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ,
                                   "MESH_AGENT_COMMAND": str(cli_dir / "claude")})
    try:
        r = redis_of(mesh_home)
        wait_until(lambda: r.hlen("tasks:workers") == 1, timeout=20)  # blocking, idle
        (cli_dir / "claude").unlink()  # uninstalled under a running worker
        run("queue-push", "--role", "builder", "--id", "orphan", "hello", check=0)
        out, err = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 69 and "command not found" in err
    assert r.xlen("tasks:queue:builder") == 1 and r.hget("tasks:index", "orphan") == "queued"
    assert int(r.hget("tasks:attempts", "orphan") or 0) == 0


def test_an_agent_does_not_outlive_its_killed_worker(run, claude_cli, tmp_path, mesh_home):
    import psutil

    run("queue-push", "--role", "builder", "--id", "long", "@sleep 60", check=0)
    worker = subprocess.Popen(["queue-drain", "--agent", "claude", "--queue", "builder",
                               "--workdir", str(tmp_path)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: calls(claude_cli), timeout=20)
        agent = calls(claude_cli)[0]["pid"]
        assert psutil.pid_exists(agent)
        worker.kill()  # kill -9: no chance to stop its agent itself
        worker.wait()

        def gone():
            try:
                return psutil.Process(agent).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_until(gone, timeout=10)
    finally:
        worker.kill()


def test_a_tools_escapee_ends_with_the_run(run, claude_cli, tmp_path):
    """A process a tool started with setsid is still the task's: it ends with the run."""
    prompt = "@bash setsid sleep 300 >/dev/null 2>&1 & echo $! > escapee.pid\nall done"
    result = run("mesh-agent", "builder", prompt, "--workdir", str(tmp_path))
    assert result.returncode == 0 and result.records[0]["status"] == "ok"
    escapee = int((tmp_path / "escapee.pid").read_text())
    wait_until(lambda: proc.start_time(escapee) is None)
