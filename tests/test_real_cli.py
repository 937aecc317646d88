"""The realcli tier: the REAL Claude Code CLI (npm @anthropic-ai/claude-code, pinned and
installed by .ci/run; see tests/realcli.py), run exactly as meshtools runs it, against the
local Messages API stand-in (tests/anthropic_api.py) that each test scripts. Offline: the
CLI's only peer is 127.0.0.1, with its traffic, telemetry and updater switches off.

Skipped as a whole, with the reason, where that CLI is not installed.
"""

import json
import os
import threading
import time

import pytest

from meshtools.core import roles
from meshtools.core.home import MeshHome
from meshtools.executors import stream
from meshtools.executors.claude import ClaudeExecutor
from meshtools.landing.worktree import install_gate

from . import anthropic_api as api
from . import realcli
from .helpers import on_terminal, paused, USAGE_LIMITED, wait_until

CLAUDE, VERSION = realcli.find()
if CLAUDE is None:
    pytest.skip(VERSION, allow_module_level=True)

pytestmark = pytest.mark.realcli
PACKAGED = roles.load()
GONE = {"MultiEdit", "TodoWrite"}  # a role may name them for older CLIs; 2.1.337 drops them
RUN_TIMEOUT = 120


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The stand-in API, and this test's environment set for the real CLI (an API-key
    login; `login(monkeypatch, server, "subscription")` switches): every meshtools command
    the test starts runs that CLI ($MESH_AGENT_COMMAND)."""
    with api.Server() as running:
        login(monkeypatch, running, "api_key", tmp_path / "claude-home")
        yield running


def login(monkeypatch, running, kind, home=None):
    home = home or os.environ["HOME"]
    env = api.cli_env(running, home, login=kind)
    for key in set(os.environ) - set(env):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MESH_AGENT_COMMAND", CLAUDE)
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "1")  # where retries are not the point
    monkeypatch.setenv("TZ", "UTC")


@pytest.fixture
def work(tmp_path):
    return tmp_path / "work"


def execute(role, mesh_home, workdir, task_id, session=None, **kw):
    executor = ClaudeExecutor(role, home=MeshHome(str(mesh_home)), session=session, **kw)
    return executor.run({"id": task_id, "prompt": "Do the task."}, str(workdir), RUN_TIMEOUT)


def trace(mesh_home, task_id):
    path = mesh_home / "tasks" / task_id / "stream.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def drain(run, workdir, *push, queue="builder"):
    """Push one task and run it with a real worker in workdir (a plain folder: a writer
    role's worker refuses the main checkout); its result record."""
    workdir.mkdir(exist_ok=True)
    run("queue-push", "--max-attempts", "1", *push, check=0)
    [result] = run("queue-drain", "--agent", "claude", "--queue", queue, "--once",
                   "--workdir", str(workdir), check=0, timeout=RUN_TIMEOUT).records
    return result


# --- every role's command line ---------------------------------------------------------------

@pytest.mark.parametrize("name", PACKAGED)
def test_every_roles_command_line_runs_with_exactly_its_tools(name, server, repo, mesh_home):
    server.script(api.text(f"{name} here."))
    outcome = execute(PACKAGED[name], mesh_home, repo, f"role-{name}")
    init = next(r for r in trace(mesh_home, f"role-{name}") if r.get("subtype") == "init")
    assert (outcome.status, outcome.exit_code, outcome.output) == ("ok", 0, f"{name} here.")
    assert outcome.details["model"] == init["model"] != PACKAGED[name].model  # resolved
    sent = {t["name"] for t in server.messages()[0]["tools"]} - {"DeferredToolPlaceholder"}
    assert {"Task" if t == "Agent" else t for t in sent} <= set(init["tools"])  # some deferred
    named = {"Task" if t == "Agent" else t for t in PACKAGED[name].tools or ()}  # one tool
    assert set(init["tools"]) == named - GONE  # none the role does not name, none missing


# --- the lock gate -----------------------------------------------------------------------

@pytest.fixture
def gated(repo, run, anchor_process):
    """b1, a live builder session, holds crates/core; the gate is installed in the repo."""
    run("coord-register", "--role", "builder", "--id", "b1",
        "--pid", str(anchor_process().pid), check=0)
    run("file-lock", "acquire", "-n", "--as", "b1", "crates/core", check=0)
    install_gate(repo)
    return {"locked": repo / "crates/core/src/lib.rs", "unlocked": repo / "crates/cli/src/main.rs"}


def both_writes(paths):
    return [("Write", {"file_path": str(paths["unlocked"]), "content": "// unlocked\n"}),
            ("Write", {"file_path": str(paths["locked"]), "content": "// locked\n"})]


def test_the_gate_denies_an_unlocked_write_and_allows_a_locked_one(server, gated, repo,
                                                                    mesh_home):
    server.script(api.tools(*both_writes(gated)), api.text("one refused"))
    outcome = execute(PACKAGED["builder"], mesh_home, repo, "gate-1", session="b1")
    assert outcome.status == "ok"
    assert gated["unlocked"].read_text() == "fn main() {}\n"
    assert gated["locked"].read_text() == "// locked\n"
    assert [d["path"] for d in outcome.details["permission_denials"]] == [
        str(gated["unlocked"])]
    refused = [b for r in trace(mesh_home, "gate-1") if r.get("type") == "user"
               for b in stream.blocks(r) if b.get("is_error")]
    assert len(refused) == 1 and "PreToolUse:Write hook error" in str(refused[0]["content"])
    assert "crates/cli" in str(refused[0]["content"])


def test_the_gate_holds_inside_a_subagent(server, gated, repo, mesh_home):
    writes = iter(both_writes(gated))

    def reply(body):
        if "SUBTASK" in api.said(body):  # the subagent: two writes, one call each, then text
            return next((api.tools(call) for call in writes), None) or api.text("sub done")
        if api.turn(body) == 1:
            return api.tool("Agent", description="writer", prompt="SUBTASK: write both",
                            subagent_type="general-purpose")
        return api.text("main done")

    server.default = reply
    outcome = execute(PACKAGED["builder"], mesh_home, repo, "gate-2", session="b1")
    assert outcome.status == "ok"
    records = trace(mesh_home, "gate-2")
    assert any(r.get("parent_tool_use_id") for r in records if r.get("type") == "assistant")
    assert gated["unlocked"].read_text() == "fn main() {}\n"
    assert gated["locked"].read_text() == "// locked\n"


# --- a task through the queue, and its trace ----------------------------------------------

def test_a_queued_task_is_traced_with_the_real_tool_calls_cost_and_turns(server, run, work):
    notes = work / "notes.txt"
    server.script(api.tools(("Write", {"file_path": str(notes), "content": "hello\n"}),
                            preface="Writing the notes."),
                  api.tool("Bash", command="cat notes.txt", description="show"),
                  api.text("Wrote notes.txt."))
    result = drain(run, work, "--role", "builder", "--id", "q1", "write the notes")
    assert (result["status"], result["turns"]) == ("ok", 3) and result["cost_usd"] > 0
    assert notes.read_text() == "hello\n"
    records = run("meshctl", "trace", "q1", "--json", check=0).records
    calls = [(b["name"], b["input"]) for r in records if r.get("type") == "assistant"
             for b in r["message"]["content"] if b["type"] == "tool_use"]
    assert calls == [("Write", {"file_path": str(notes), "content": "hello\n"}),
                     ("Bash", {"command": "cat notes.txt", "description": "show"})]
    code, shown, _ = on_terminal(["meshctl", "trace", "q1"])
    lines = shown.replace("\r\n", "\n").splitlines()
    assert code == 0
    assert any(line.endswith(f"tool     Write {notes}") for line in lines)
    assert any(line.endswith("tool     Bash cat notes.txt") for line in lines)
    assert any(f"result   ok · ${result['cost_usd']:.4f} · 3 turns" in line for line in lines)


# --- usage limits (issue 17 item 5) --------------------------------------------------------

def test_a_spent_subscription_window_pauses_the_mesh_until_its_reset(server, run, work,
                                                                     mesh_home, monkeypatch):
    login(monkeypatch, server, "subscription")
    resets = int(time.time()) + 7200
    server.default = api.rate_limited(True, resets)
    result = drain(run, work, "--role", "builder", "--id", "u1", "anything")
    assert result["status"] == USAGE_LIMITED and result["resets_at"] == resets
    assert paused(mesh_home)["until"] == resets
    [request] = server.messages()  # no retries: the window is spent
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {api.OAUTH_TOKEN}"


@pytest.mark.parametrize("kind, unified", [("api_key", False), ("api_key", True),
                                           ("subscription", False)])
def test_a_plain_rate_limit_is_retried_by_the_cli_then_backs_off_alone(kind, unified, server,
                                                                       run, work, mesh_home,
                                                                       monkeypatch):
    """An API key's 429 is retried by the CLI whatever its headers say (they never reach the
    stream), and so is a subscription's 429 without unified headers; then the task backs
    off on its own and the mesh runs on."""
    login(monkeypatch, server, kind)  # CLAUDE_CODE_MAX_RETRIES=1
    server.default = api.rate_limited(unified)
    result = drain(run, work, "--role", "builder", "--id", "u2", "anything")
    assert len(server.messages()) == 2 and result["api_retries"] == 1
    assert (result["status"], result["error"]) == ("rate_limited", "rate_limit")
    assert result.get("resets_at") is None and paused(mesh_home) is None


# --- overload, budget, turns, SIGTERM -----------------------------------------------------

def test_529s_are_retried_then_the_run_fails_as_overloaded(server, run, work, monkeypatch):
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "2")
    server.default = api.overloaded()
    result = drain(run, work, "--role", "builder", "--id", "o1", "anything")
    assert (result["status"], result["error"], result["api_retries"]) == (
        "failed", stream.OVERLOADED, 2)
    assert len(server.messages()) == 3


def keep_calling_tools(body):
    return api.tool("Bash", command=f"echo turn {api.turn(body)}", description="again")


def test_the_roles_budget_stops_the_run(server, run, work, mesh_home):
    (mesh_home / "roles.toml").parent.mkdir(parents=True, exist_ok=True)
    (mesh_home / "roles.toml").write_text("[roles.builder]\nmax_budget_usd = 0.001\n")
    server.default = keep_calling_tools
    result = drain(run, work, "--role", "builder", "--id", "b1", "spend")
    assert (result["status"], result["error"]) == ("failed", stream.BUDGET)
    assert result["cost_usd"] >= 0.001 and len(server.messages()) < 5


def test_a_turn_limit_in_the_agent_command_stops_the_run(server, run, work, monkeypatch):
    monkeypatch.setenv("MESH_AGENT_COMMAND", f"{CLAUDE} --max-turns=2")
    server.default = keep_calling_tools
    result = drain(run, work, "--role", "builder", "--id", "t1", "loop")
    assert (result["status"], result["error"]) == ("failed", stream.MAX_TURNS)
    assert "Reached maximum number of turns (2)" in result["output"]


def test_sigterm_ends_the_run_as_terminated(server, repo, mesh_home):
    release = threading.Event()

    def stall(body):  # the model never answers until the test is over
        release.wait(RUN_TIMEOUT)
        return api.text("too late")

    server.default = stall
    executor = ClaudeExecutor(PACKAGED["builder"], home=MeshHome(str(mesh_home)))
    outcomes = []
    runner = threading.Thread(target=lambda: outcomes.append(executor.run(
        {"id": "s1", "prompt": "wait"}, str(repo), RUN_TIMEOUT)))
    runner.start()
    try:
        wait_until(lambda: server.messages(), timeout=60)
        executor.interrupt()
        runner.join(RUN_TIMEOUT)
    finally:
        release.set()
    [outcome] = outcomes
    assert (outcome.status, outcome.exit_code, outcome.details["error"]) == (
        "failed", 143, "terminated")
    assert not [r for r in trace(mesh_home, "s1") if r.get("type") == "result"]
