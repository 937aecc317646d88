"""Folding stream-json lines: the literal lines of CLAUDE-CLI.md, no process."""

import json

import pytest

from meshtools.executors import stream
from meshtools.executors.stream import StreamState, feed, verdict

INIT = ('{"type":"system","subtype":"init","cwd":"/w","session_id":"6f1…","tools":["Task","Bash",'
        '"Glob","Grep","Read","Edit","Write"],"mcp_servers":[],"model":"claude-sonnet-…",'
        '"permissionMode":"default","apiKeySource":"ANTHROPIC_API_KEY",'
        '"claude_code_version":"2.1.83","uuid":"…"}')
TOOL_USE = ('{"type":"assistant","message":{"id":"msg_015","type":"message","role":"assistant",'
            '"model":"claude-…","content":[{"type":"tool_use","id":"toolu_01A","name":"Read",'
            '"input":{"file_path":"/w/main.rs"}}],"stop_reason":null,"usage":{"input_tokens":4,'
            '"cache_creation_input_tokens":1200,"cache_read_input_tokens":8400,'
            '"output_tokens":7}},"parent_tool_use_id":null,"session_id":"…","uuid":"…"}')
TOOL_RESULT = ('{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_01A",'
               '"type":"tool_result","content":"…","is_error":false}]},'
               '"parent_tool_use_id":null,"session_id":"…","uuid":"…"}')
RESULT = ('{"type":"result","subtype":"success","is_error":false,"duration_ms":5339,'
          '"duration_api_ms":4800,"num_turns":2,"result":"…final text…","stop_reason":"end_turn",'
          '"session_id":"…","total_cost_usd":0.0368,"usage":{"input_tokens":2,'
          '"cache_creation_input_tokens":12000,"cache_read_input_tokens":10000,'
          '"output_tokens":10},"modelUsage":{"claude-…":{"inputTokens":2,"outputTokens":10,'
          '"costUSD":0.0368}},"permission_denials":[],"terminal_reason":"completed","uuid":"…"}')
AUTH_RESULT = ('{"type":"result","subtype":"success","is_error":true,"num_turns":1,'
               '"result":"Not logged in · Please run /login","total_cost_usd":0,'
               '"terminal_reason":"api_error"}')
REJECTED = ('{"type":"rate_limit_event","rate_limit_info":{"status":"rejected",'
            '"resetsAt":1700003600,"rateLimitType":"five_hour"}}')
ALLOWED = ('{"type":"rate_limit_event","rate_limit_info":{"status":"allowed",'
           '"resetsAt":1700003600,"rateLimitType":"five_hour"}}')
RETRY = ('{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,'
         '"retry_delay_ms":500,"error_status":529,"error":"overloaded"}')
MAX_TURNS = ('{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":40,'
             '"errors":["Reached maximum number of turns (40)"],"total_cost_usd":1.2}')


def fold(*lines) -> StreamState:
    state = StreamState()
    for line in lines:
        feed(state, json.loads(line) if isinstance(line, str) else line)
    return state


def assistant_error(error, text="…"):
    return {"type": "assistant", "error": error, "message": {
        "id": "msg_x", "model": "<synthetic>", "content": [{"type": "text", "text": text}]}}


def test_healthy_run_phases_and_totals():
    state = StreamState()
    seen = [state.phase]
    for line in (INIT, ALLOWED, TOOL_USE, TOOL_RESULT, RESULT):
        feed(state, json.loads(line))
        if state.phase != seen[-1]:
            seen.append(state.phase)
    assert seen == ["starting", "thinking", "tool Read", "thinking", "done"]
    assert state.session_id == "6f1…" and state.model == "claude-sonnet-…"  # the init's
    assert state.turns == 2 and state.cost_usd == 0.0368 and state.result == "…final text…"
    assert state.tokens == {"input": 2, "output": 10, "cache_creation": 12000,
                            "cache_read": 10000}
    assert not state.rate_limited  # an allowed rate_limit_event is healthy
    assert verdict(state, 0) == ("ok", None)


def test_usage_is_never_summed_across_lines_of_one_message():
    # two assistant lines of one message id, then the result's totals
    state = fold(INIT, TOOL_USE, TOOL_USE, RESULT)
    assert state.tokens["input"] == 2 and state.tokens["cache_read"] == 10000


def test_is_error_with_subtype_success_is_a_failure():
    state = fold(INIT, assistant_error("authentication_failed", "Not logged in"), AUTH_RESULT)
    assert state.subtype == "success" and state.is_error
    assert verdict(state, 1) == ("failed", "auth")
    assert state.phase == "failed"


def test_exit_code_alone_also_fails_a_run():
    assert verdict(fold(INIT, RESULT), 1)[0] == "failed"
    assert verdict(fold(INIT, RESULT), 0)[0] == "ok"


def limit_result(text, status=429):
    result = json.loads(AUTH_RESULT)
    result.update(result=text, api_error_status=status)
    return result


def test_a_rejected_subscription_window_is_a_usage_limit():
    result = limit_result("You've hit your 5-hour limit · resets 5:36pm (UTC)")
    state = fold(INIT, REJECTED, assistant_error("rate_limit"), result)
    assert state.rate_limited and state.resets_at == 1700003600
    assert verdict(state, 1) == ("usage_limited", "usage_limit")
    assert stream.summary(state)["resets_at"] == 1700003600
    assert stream.summary(state)["rate_limit_type"] == "five_hour"


def test_hit_your_limit_without_the_event_is_a_window_of_unknown_reset():
    state = fold(INIT, limit_result("You've hit your limit"))
    assert verdict(state, 1) == ("usage_limited", "usage_limit")
    assert "resets_at" not in stream.summary(state)


API_KEY_429 = "API Error: Request rejected (429) · this may be a temporary capacity issue"
NOT_A_WINDOW = ("API Error: Server is temporarily limiting requests (not your usage limit) "
                "· Rate limited")
API_RETRY_429 = {"type": "system", "subtype": "api_retry", "attempt": 10, "max_retries": 10,
                 "retry_delay_ms": 32000, "error_status": 429, "error": "rate_limit"}


def test_an_api_keys_429_is_a_plain_rate_limit():
    """2.1.337 with an API key: no rate_limit_event, the CLI's own retries, then
    `error: rate_limit`: it paused the whole mesh (issue 17 item 5)."""
    state = fold(INIT, API_RETRY_429, assistant_error("rate_limit", API_KEY_429),
                 limit_result(API_KEY_429))
    assert verdict(state, 1) == ("rate_limited", "rate_limit")
    assert "resets_at" not in stream.summary(state)


def test_a_subscriptions_429_without_unified_headers_is_a_plain_rate_limit():
    """`rate_limit_event {"status":"rejected"}` with no resetsAt, and the words "not your
    usage limit" (which hold "usage limit"): it paused the mesh as if the window were
    spent (issue 17 item 5)."""
    rejected = {"type": "rate_limit_event", "rate_limit_info": {"status": "rejected"}}
    state = fold(INIT, rejected, assistant_error("rate_limit", NOT_A_WINDOW),
                 limit_result(NOT_A_WINDOW))
    assert verdict(state, 1) == ("rate_limited", "rate_limit")
    assert verdict(fold(INIT, limit_result(NOT_A_WINDOW)), 1)[1] == "rate_limit"


@pytest.mark.parametrize("lines", [
    [assistant_error("billing_error", "Credit balance is too low"),
     limit_result("Credit balance is too low", None)],
    [limit_result('API Error: 400 {"type":"error","error":{"type":"invalid_request_error",'
                  '"message":"Your credit balance is too low to access the Anthropic API."}}',
                  400)],
    [limit_result("API Error: Request rejected (429) · You have reached your specified "
                  "workspace API usage limits. You will regain access on 2027-01-01 at "
                  "00:00 UTC.")],
])
def test_out_of_credit_or_over_a_spend_cap_is_a_spend_limit(lines):
    state = fold(INIT, *lines)
    assert verdict(state, 1) == ("usage_limited", "spend_limit")


def test_a_spend_limit_lifts_when_the_api_says():
    text = ("You have reached your specified API usage limits. You will regain access on "
            "2027-01-01 at 00:00 UTC.")
    state = fold(INIT, limit_result(f'API Error: 400 {{"message":"{text}"}}', 400))
    assert verdict(state, 1)[1] == "spend_limit"
    assert stream.summary(state)["resets_at"] == 1798761600  # 2027-01-01T00:00:00Z


def test_two_inits_and_two_results_the_main_loops_totals_and_both_costs():
    """A run that launched an async subagent (2.1.337, as recorded): a second init when the
    subagent's notification starts a turn, then both results at the end, the main loop's
    first and the notification turn's with `origin`. The totals were the later one's: the
    main loop's are taken, the model and session the first init's, and both costs kept
    (issue 17 item 11)."""
    main = json.loads(RESULT)
    main.update(session_id="6f1…", num_turns=2, result="main done", total_cost_usd=0.0027,
                result_index=0)
    second_init = json.loads(INIT)
    second_init.update(model="claude-haiku-…")
    notified = dict(main, num_turns=1, total_cost_usd=0.0029, usage={"input_tokens": 99},
                    origin={"kind": "task-notification", "producer": "session-task"},
                    result_index=1)
    state = fold(INIT, TOOL_USE, second_init, TOOL_USE, main, notified)
    assert (state.turns, state.result, state.cost_usd) == (2, "main done", 0.0027)
    assert state.model == "claude-sonnet-…" and state.session_id == "6f1…"
    assert state.tokens["input"] == 2
    assert stream.summary(state)["costs_usd"] == [0.0027, 0.0029]
    assert verdict(state, 0) == ("ok", None) and state.phase == "done"


def test_a_subagents_result_is_not_the_runs_total():
    sub = json.loads(RESULT)
    sub.update(total_cost_usd=0.1, num_turns=7, parent_tool_use_id="toolu_01A")
    state = fold(INIT, sub, RESULT)
    assert (state.turns, state.cost_usd) == (2, 0.0368)
    assert stream.summary(state)["costs_usd"] == [0.1, 0.0368]
    assert "costs_usd" not in stream.summary(fold(INIT, RESULT))


def test_overload_retries_counted():
    result = {"type": "result", "subtype": "success", "is_error": True,
              "result": "API Error: Repeated 529 Overloaded errors", "api_error_status": 529}
    state = fold(INIT, RETRY, RETRY, RETRY, assistant_error("overloaded"), result)
    assert state.api_retries == 3
    assert verdict(state, 1) == ("failed", "overloaded")


@pytest.mark.parametrize("subtype,kind", [("error_max_turns", "max_turns"),
                                          ("error_max_budget_usd", "budget"),
                                          ("error_during_execution", "execution")])
def test_error_subtypes(subtype, kind):
    line = json.loads(MAX_TURNS)
    line["subtype"] = subtype
    state = fold(INIT, line)
    assert verdict(state, 1) == ("failed", kind)
    assert state.errors and state.result is None


def test_no_result_line():
    state = fold(INIT, TOOL_USE)
    assert verdict(state, 143) == ("failed", "terminated")
    assert verdict(state, 0) == ("failed", "execution")
    assert verdict(StreamState(), None) == ("failed", "execution")


def test_permission_denials_are_kept_without_content():
    line = json.loads(RESULT)
    line["permission_denials"] = [{"tool_name": "Write", "tool_use_id": "toolu_1",
                                   "tool_input": {"file_path": "/w/a.rs", "content": "secret"}}]
    summary = stream.summary(fold(INIT, line))
    assert summary["permission_denials"] == [{"tool": "Write", "tool_use_id": "toolu_1",
                                              "path": "/w/a.rs"}]


def test_unknown_lines_do_not_break_the_fold():
    state = fold({"type": "stream_event", "event": {}}, {"type": "system", "subtype": "hook"},
                 INIT, RESULT)
    assert verdict(state, 0) == ("ok", None) and state.lines == 4
