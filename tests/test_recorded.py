"""What the real Claude Code CLI printed (tests/fakes/recorded/, recorded through the local
Messages API stand-in by tests/fakes/record.py), read by meshtools' own parser: every
recorded case must be told apart as the real run was. Fast: no real CLI needed here; the
tier that runs it is tests/test_real_cli.py.
"""

import json
import os
import subprocess

import pytest

from meshtools.executors import stream
from meshtools.queue import pause

from .helpers import paused, USAGE_LIMIT, USAGE_LIMITED
from .realcli import RECORDED

RESETS_AT = 1796680800  # the window end recorded in subscription_429_rejected
BEFORE_RESET = RESETS_AT - 3600


def index() -> dict:
    with open(os.path.join(RECORDED, "index.json"), encoding="utf-8") as f:
        return json.load(f)


def recorded(name: str) -> tuple[list[dict], int]:
    """A recorded run: its stream-json lines and its exit code."""
    with open(os.path.join(RECORDED, name + ".jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()], index()[name]["exit"]


def fold(name: str) -> tuple[str, dict, stream.StreamState]:
    """The run's status and the details a result record carries, as the executor makes them."""
    lines, code = recorded(name)
    state = stream.StreamState()
    for line in lines:
        stream.feed(state, line)
    status, kind = stream.verdict(state, code)
    return status, {**stream.summary(state), "error": kind}, state


def test_every_recording_is_real_and_listed():
    cases = index()
    files = {n[:-6] for n in os.listdir(RECORDED) if n.endswith(".jsonl")}
    assert files == set(cases)
    for name, case in cases.items():
        lines, _ = recorded(name)
        init = lines[0]
        assert (init["type"], init["subtype"]) == ("system", "init")
        assert init["claude_code_version"] == case["claude_code_version"]
        assert lines[-1]["type"] == "result" and "-p" in case["argv"]


def test_a_run_with_tool_calls_is_ok_with_the_result_lines_totals():
    status, details, state = fold("success_tools")
    assert (status, details["error"]) == ("ok", None)
    assert details["model"] == "claude-sonnet-5-5"  # the resolved model, not the alias
    assert (details["turns"], details["cost_usd"]) == (3, 0.00162)
    assert details["tokens"]["input"] == 360 and state.result == "Wrote notes.txt."


def test_a_hook_denial_is_a_permission_denial_of_a_run_that_went_on():
    status, details, _ = fold("hook_denied")
    assert status == "ok"
    [denial] = details["permission_denials"]
    assert denial["tool"] == "Write" and denial["path"].endswith("/crates/cli/x.rs")


def test_a_refused_api_key_is_a_login_failure_that_pauses_the_mesh():
    status, details, _ = fold("auth_401")
    assert (status, details["error"]) == ("failed", stream.AUTH)
    assert pause.for_outcome(details, BEFORE_RESET)[1] == pause.AUTH


def test_a_spent_subscription_window_pauses_the_mesh_until_it_resets():
    status, details, _ = fold("subscription_429_rejected")
    assert status == USAGE_LIMITED and details["resets_at"] == RESETS_AT
    assert pause.for_outcome(details, BEFORE_RESET) == (RESETS_AT, USAGE_LIMIT)


@pytest.mark.parametrize("name", ["api_key_429", "api_key_429_unified",
                                  "subscription_429_plain"])
def test_a_plain_rate_limit_backs_the_task_off_and_leaves_the_mesh_running(name):
    """An API key's 429 (its headers never reach the stream) and a subscription's 429
    without unified headers are rate limits, not a spent window."""
    status, details, _ = fold(name)
    assert (status, details["error"]) == ("rate_limited", "rate_limit")
    assert details.get("resets_at") is None
    assert pause.for_outcome(details, BEFORE_RESET) is None


def test_overload_retries_are_counted_and_the_run_is_overloaded():
    """The last assistant line says server_error, not overloaded: the 529 status decides."""
    status, details, state = fold("overloaded_529")
    assert state.assistant_error == "server_error" and state.api_error_status == 529
    assert (status, details["error"], details["api_retries"]) == (
        "failed", stream.OVERLOADED, 2)
    assert pause.for_outcome(details, BEFORE_RESET) is None


def test_the_turn_limit_ends_the_run_as_max_turns():
    status, details, state = fold("max_turns")
    assert (status, details["error"]) == ("failed", stream.MAX_TURNS)
    assert state.errors == ["Reached maximum number of turns (2)"]


def test_the_role_budget_ends_the_run_as_budget():
    status, details, state = fold("max_budget")
    assert (status, details["error"]) == ("failed", stream.BUDGET)
    assert state.errors == ["Reached maximum budget ($0.001)"] and details["cost_usd"] > 0


def test_async_subagents_print_two_inits_and_two_results():
    lines, code = recorded("async_subagent")
    kinds = [(line["type"], line.get("subtype")) for line in lines]
    assert kinds.count(("system", "init")) == 2 and kinds.count(("result", "success")) == 2
    status, details, _ = fold("async_subagent")
    assert (code, status) == (0, "ok") and details["cost_usd"] == 0.0027


def test_async_subagents_take_the_main_loops_totals():
    """The main loop's result comes first (2 turns); the second is the notification's."""
    _, details, _ = fold("async_subagent")
    assert details["turns"] == 2


# --- the stand-in CLI (tests/fakes/claude) against what the real one printed ---------------

def shape(lines):
    """What a run's lines are, line by line, without the stand-in's extra allowed-status
    rate_limit_event (the real one prints those only to a subscription login)."""
    return [(line["type"], line.get("subtype"), line.get("error")) for line in lines
            if line["type"] != "rate_limit_event"]


def test_the_stand_in_cli_prints_what_the_real_one_did(claude_cli, monkeypatch):
    """Given the recorded command line: the same tool set and resolved model, the same line
    shapes and exit code when 529s outlast the retries."""
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "2")
    argv = ["claude", *index()["overloaded_529"]["argv"]]
    fake = subprocess.run(argv, input="@fail overloaded", capture_output=True, text=True,
                          timeout=60)
    lines = [json.loads(line) for line in fake.stdout.splitlines()]
    real, code = recorded("overloaded_529")
    assert fake.returncode == code
    assert (lines[0]["tools"], lines[0]["model"]) == (real[0]["tools"], real[0]["model"])
    assert shape(lines) == shape(real)


# --- replayed by the stand-in CLI through a real worker ------------------------------------

def drain(run, tmp_path, task_id, case):
    run("queue-push", "--role", "builder", "--id", task_id, f"@replay {case}", check=0)
    return run("queue-drain", "--agent", "claude", "--queue", "builder", "--once",
               "--workdir", str(tmp_path), check=0).records


def test_a_replayed_subscription_limit_hands_the_task_back_and_pauses(run, claude_cli,
                                                                      tmp_path, mesh_home):
    [result] = drain(run, tmp_path, "r1", "subscription_429_rejected")
    assert result["status"] == USAGE_LIMITED
    assert paused(mesh_home)["reason"] == USAGE_LIMIT


def test_a_replayed_api_key_rate_limit_leaves_the_mesh_running(run, claude_cli, tmp_path,
                                                               mesh_home):
    [result] = drain(run, tmp_path, "r2", "api_key_429")
    assert result["status"] != USAGE_LIMITED
    assert paused(mesh_home) is None


def test_a_replayed_run_is_traced_with_its_real_tool_calls(run, claude_cli, tmp_path,
                                                            mesh_home):
    [result] = drain(run, tmp_path, "r3", "success_tools")
    assert result["status"] == "ok"
    records = run("meshctl", "trace", "r3", "--json", check=0).records
    tools = [b["name"] for r in records if r.get("type") == "assistant"
             for b in r["message"]["content"] if b["type"] == "tool_use"]
    assert tools == ["Write", "Bash"]
    assert records[-2]["num_turns"] == 3 and records[-2]["total_cost_usd"] == 0.00162


def agent_events(mesh_home, name):
    path = mesh_home / "events.jsonl"
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == name]


def test_agent_started_names_the_model_the_run_resolved(run, claude_cli, tmp_path, mesh_home):
    drain(run, tmp_path, "r4", "success_tools")
    [started] = agent_events(mesh_home, "agent.started")
    assert started["model"] == "claude-sonnet-5-5"  # system/init's, not the alias sonnet


def test_a_usage_limited_event_does_not_say_failed(run, claude_cli, tmp_path, mesh_home):
    drain(run, tmp_path, "r5", "subscription_429_rejected")
    [limited] = agent_events(mesh_home, "agent.usage_limited")
    assert limited["status"] != "failed"
