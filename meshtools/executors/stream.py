"""Folding Claude Code's stream-json lines into one state. Pure: no I/O.

The result line holds the totals (cost, usage, turns): per-line usage is never summed,
because several assistant lines share one message id. Success is decided by `is_error`
together with the exit code (see `verdict`), never by `subtype` alone: a failed run often
says subtype "success".

A run whose agent launched async subagents prints two `system/init` and two `result` lines
(2.1.337: the second init when the subagent's notification starts a turn of its own; both
results at the end, the main loop's first, then the notification turn's, which carries
`origin: {"kind": "task-notification"}`). The run is the main loop's: its model and
session are the first init's, its totals the first result's that has no `origin` and no
`parent_tool_use_id`. Every result line's cost is kept (`costs_usd`), in the order printed
(total_cost_usd is the process's running total).

Which limit ended a run (queue.limits) is read from the rate_limit_event lines, the
assistant line's error, the result's api_error_status and its text: see `limit_kind`.
"""

import calendar
import re
import time
from dataclasses import dataclass, field

from ..queue.limits import (OVERLOADED, RATE_LIMIT, SPEND_LIMIT, USAGE_LIMIT, status_of)
from ..queue.outcome import AUTH, BUDGET, EXECUTION, MAX_TURNS, UNKNOWN  # noqa: F401 - the kinds

STARTING, THINKING, DONE, FAILED = "starting", "thinking", "done", "failed"

_ASSISTANT_ERRORS = {"authentication_failed": AUTH, "overloaded": OVERLOADED}
_SUBTYPE_ERRORS = {"error_max_turns": MAX_TURNS, "error_max_budget_usd": BUDGET,
                   "error_during_execution": EXECUTION}
_STATUS_ERRORS = {401: AUTH, 403: AUTH, 529: OVERLOADED}

# What the CLI and the API say of a limit (CLAUDE-CLI.md; the CLI's error reference).
_NOT_A_WINDOW = "not your usage limit"  # "Server is temporarily limiting requests (...)"
_SPEND_WORDS = re.compile(r"credit balance is too low|spend(?:ing)? (?:limit|cap)"
                          r"|reached your specified (?:workspace )?api usage limits"
                          r"|out of (?:usage |extra usage )?credits?|enforced_spend_limit")
_WINDOW_WORDS = re.compile(r"hit your (?:[\w-]+ )?limit|usage limit reached")
_REGAIN = re.compile(r"regain access on (\d{4}-\d{2}-\d{2}) at (\d{1,2}:\d{2}) utc")


@dataclass
class StreamState:
    session_id: str | None = None  # the main loop's (its init's)
    model: str | None = None  # the model the main loop's init resolved (not the alias)
    phase: str = STARTING
    lines: int = 0
    turns: int = 0
    cost_usd: float | None = None
    costs_usd: list = field(default_factory=list)  # every result line's, in order
    tokens: dict = field(default_factory=dict)
    result: str | None = None
    errors: list = field(default_factory=list)
    subtype: str | None = None
    is_error: bool = False
    seen_result: bool = False  # the main loop's
    inits: int = 0
    assistant_error: str | None = None  # the last assistant line's "error"
    api_error_status: int | None = None
    rate_limited: bool = False  # a rejected rate_limit_event
    resets_at: int | None = None  # a rejected rate_limit_event's resetsAt
    rate_limit_type: str | None = None  # its rateLimitType (five_hour, seven_day, ...)
    api_retries: int = 0
    last_retry_error: str | None = None
    permission_denials: list = field(default_factory=list)


def feed(state: StreamState, line: dict) -> None:
    """Fold one parsed stream-json line into state (unknown lines are counted, not fatal)."""
    state.lines += 1
    kind, subtype = line.get("type"), line.get("subtype")
    if kind == "system" and subtype == "init":
        state.inits += 1
        if state.inits == 1:  # the main loop's
            state.session_id = line.get("session_id")
            state.model = line.get("model")
        state.phase = THINKING
    elif kind == "system" and subtype == "api_retry":
        state.api_retries += 1
        state.last_retry_error = line.get("error")
    elif kind == "rate_limit_event":
        info = line.get("rate_limit_info") or {}
        if info.get("status") == "rejected":
            state.rate_limited = True
            state.rate_limit_type = info.get("rateLimitType") or state.rate_limit_type
            if isinstance(info.get("resetsAt"), (int, float)):
                state.resets_at = int(info["resetsAt"])
    elif kind == "assistant":
        if line.get("error"):
            state.assistant_error = line["error"]
        state.phase = THINKING
        for block in blocks(line):
            if block.get("type") == "tool_use":
                state.phase = f"tool {block.get('name')}"
    elif kind == "user":  # tool results: the model thinks about them next
        state.phase = THINKING
    elif kind == "result":
        if isinstance(line.get("total_cost_usd"), (int, float)):
            state.costs_usd.append(float(line["total_cost_usd"]))
        if _main_loops(state, line):
            _fold_result(state, line)
        if state.seen_result:  # else the main loop goes on
            state.phase = FAILED if state.is_error else DONE


def _main_loops(state: StreamState, line: dict) -> bool:
    """Whether a result line is the main loop's: the first that answers neither a task
    notification (`origin`) nor a subagent's call (`parent_tool_use_id`)."""
    return not (state.seen_result or line.get("origin") or line.get("parent_tool_use_id"))


def blocks(line: dict) -> list[dict]:
    """The content blocks of an assistant or user line (text, thinking, tool_use,
    tool_result); a user line's content may also be a plain string."""
    content = (line.get("message") or {}).get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _fold_result(state: StreamState, line: dict) -> None:
    state.seen_result = True
    state.subtype = line.get("subtype")
    state.is_error = bool(line.get("is_error"))
    state.session_id = state.session_id or line.get("session_id")
    state.turns = int(line.get("num_turns") or 0)
    if isinstance(line.get("total_cost_usd"), (int, float)):
        state.cost_usd = float(line["total_cost_usd"])
    usage = line.get("usage") or {}
    state.tokens = {"input": usage.get("input_tokens", 0),
                    "output": usage.get("output_tokens", 0),
                    "cache_creation": usage.get("cache_creation_input_tokens", 0),
                    "cache_read": usage.get("cache_read_input_tokens", 0)}
    state.result = line.get("result")
    state.errors = list(line.get("errors") or [])
    if isinstance(line.get("api_error_status"), int):
        state.api_error_status = line["api_error_status"]
    state.permission_denials = list(line.get("permission_denials") or [])


def _said(state: StreamState) -> str:
    """What the run said of its end, lowercased: the result text and its errors."""
    return " ".join([state.result or "", *map(str, state.errors)]).lower()


def limit_kind(state: StreamState) -> str | None:
    """Which limit ended the run (queue.limits), or None. Strongest evidence first: a
    rejected rate_limit_event with resetsAt is a subscription window; out of credit or a
    spend cap (billing_error, the API's words) is a spend limit; the CLI's "not your usage
    limit" and any other 429 (an API key's: its stream has no rate_limit_event) are plain
    rate limits, as is a rejected event without resetsAt; "hit your ... limit" with no
    event is a window whose reset is unknown."""
    text = _said(state)
    if state.rate_limited and state.resets_at is not None:
        return USAGE_LIMIT
    if state.assistant_error == "billing_error" or _SPEND_WORDS.search(text):
        return SPEND_LIMIT
    if _NOT_A_WINDOW in text:
        return RATE_LIMIT
    if _WINDOW_WORDS.search(text):
        return USAGE_LIMIT
    if state.rate_limited or state.assistant_error == "rate_limit" \
            or state.api_error_status == 429:
        return RATE_LIMIT
    return None


def resets_at(state: StreamState) -> int | None:
    """When the limit lifts (epoch seconds): the rejected event's resetsAt, else the
    API's "You will regain access on YYYY-MM-DD at HH:MM UTC" of a spend limit."""
    if state.resets_at is not None:
        return state.resets_at
    found = _REGAIN.search(_said(state))
    if not found:
        return None
    try:
        when = time.strptime(f"{found[1]} {found[2]}", "%Y-%m-%d %H:%M")
    except ValueError:
        return None
    return calendar.timegm(when)


def error_kind(state: StreamState) -> str:
    """What went wrong, from the strongest evidence: the limits (limit_kind), the API
    status, the assistant line's error, the result subtype, the result text."""
    limit = limit_kind(state)
    if limit:
        return limit
    if state.api_error_status in _STATUS_ERRORS:
        return _STATUS_ERRORS[state.api_error_status]
    if state.assistant_error in _ASSISTANT_ERRORS:
        return _ASSISTANT_ERRORS[state.assistant_error]
    if state.subtype in _SUBTYPE_ERRORS:
        return _SUBTYPE_ERRORS[state.subtype]
    text = (state.result or "").lower()
    if "not logged in" in text or "invalid api key" in text or "/login" in text:
        return AUTH
    if state.last_retry_error == "overloaded":
        return OVERLOADED
    return UNKNOWN if state.seen_result else EXECUTION


def verdict(state: StreamState, exit_code: int | None) -> tuple[str, str | None]:
    """('ok', None) or (status, error kind). A run succeeded only when its result line
    says is_error false AND the process exited 0; a missing result line is a failure.
    A limit has a status of its own (queue.limits.status_of); anything else 'failed'."""
    if state.seen_result and not state.is_error and exit_code == 0:
        return "ok", None
    if not state.seen_result and exit_code is not None and exit_code in (143, -15):
        return "failed", "terminated"
    kind = error_kind(state)
    return status_of(kind), kind


def summary(state: StreamState) -> dict:
    """The details a result record carries (no prompt text, no secrets)."""
    record = {"session_id": state.session_id, "model": state.model,
              "cost_usd": state.cost_usd, "turns": state.turns, "tokens": state.tokens}
    if len(state.costs_usd) > 1:
        record["costs_usd"] = list(state.costs_usd)
    if state.api_retries:
        record["api_retries"] = state.api_retries
    if state.permission_denials:
        record["permission_denials"] = [
            {"tool": d.get("tool_name"), "tool_use_id": d.get("tool_use_id"),
             "path": (d.get("tool_input") or {}).get("file_path")}
            for d in state.permission_denials]
    resets = resets_at(state)
    if resets is not None:
        record["resets_at"] = resets
    if state.rate_limit_type:
        record["rate_limit_type"] = state.rate_limit_type
    return record
