"""Folding Claude Code's stream-json lines into one state. Pure: no I/O.

The result line holds the totals (cost, usage, turns): per-line usage is never summed,
because several assistant lines share one message id. Success is decided by `is_error`
together with the exit code (see `verdict`), never by `subtype` alone: a failed run often
says subtype "success".
"""

from dataclasses import dataclass, field

STARTING, THINKING, DONE, FAILED = "starting", "thinking", "done", "failed"

# error kinds, as the result record and the worker name them
AUTH, RATE_LIMIT, OVERLOADED, MAX_TURNS, BUDGET, EXECUTION, UNKNOWN = (
    "auth", "rate_limit", "overloaded", "max_turns", "budget", "execution", "unknown")

_ASSISTANT_ERRORS = {"authentication_failed": AUTH, "billing_error": AUTH,
                     "rate_limit": RATE_LIMIT, "overloaded": OVERLOADED}
_SUBTYPE_ERRORS = {"error_max_turns": MAX_TURNS, "error_max_budget_usd": BUDGET,
                   "error_during_execution": EXECUTION}
_STATUS_ERRORS = {401: AUTH, 403: AUTH, 429: RATE_LIMIT, 529: OVERLOADED}


@dataclass
class StreamState:
    session_id: str | None = None
    model: str | None = None
    phase: str = STARTING
    lines: int = 0
    turns: int = 0
    cost_usd: float | None = None
    tokens: dict = field(default_factory=dict)
    result: str | None = None
    errors: list = field(default_factory=list)
    subtype: str | None = None
    is_error: bool = False
    seen_result: bool = False
    assistant_error: str | None = None  # the last assistant line's "error"
    api_error_status: int | None = None
    rate_limited: bool = False  # a rejected rate_limit_event
    resets_at: int | None = None
    api_retries: int = 0
    last_retry_error: str | None = None
    permission_denials: list = field(default_factory=list)


def feed(state: StreamState, line: dict) -> None:
    """Fold one parsed stream-json line into state (unknown lines are counted, not fatal)."""
    state.lines += 1
    kind, subtype = line.get("type"), line.get("subtype")
    if kind == "system" and subtype == "init":
        state.session_id = line.get("session_id") or state.session_id
        state.model = line.get("model") or state.model
        state.phase = THINKING
    elif kind == "system" and subtype == "api_retry":
        state.api_retries += 1
        state.last_retry_error = line.get("error")
    elif kind == "rate_limit_event":
        info = line.get("rate_limit_info") or {}
        if info.get("status") == "rejected":
            state.rate_limited = True
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
        _fold_result(state, line)


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
    state.session_id = line.get("session_id") or state.session_id
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
    state.phase = FAILED if state.is_error else DONE


def error_kind(state: StreamState) -> str:
    """What went wrong, from the strongest evidence: the rate-limit event, the API status,
    the assistant line's error, the result subtype, the result text."""
    if state.rate_limited or state.assistant_error == "rate_limit":
        return RATE_LIMIT
    if state.api_error_status in _STATUS_ERRORS:
        return _STATUS_ERRORS[state.api_error_status]
    if state.assistant_error in _ASSISTANT_ERRORS:
        return _ASSISTANT_ERRORS[state.assistant_error]
    if state.subtype in _SUBTYPE_ERRORS:
        return _SUBTYPE_ERRORS[state.subtype]
    text = (state.result or "").lower()
    if "not logged in" in text or "invalid api key" in text or "/login" in text:
        return AUTH
    if "hit your limit" in text or "usage limit" in text:
        return RATE_LIMIT
    if state.last_retry_error == "overloaded":
        return OVERLOADED
    return UNKNOWN if state.seen_result else EXECUTION


def verdict(state: StreamState, exit_code: int | None) -> tuple[str, str | None]:
    """('ok', None) or ('failed', error kind). A run succeeded only when its result line
    says is_error false AND the process exited 0; a missing result line is a failure."""
    if state.seen_result and not state.is_error and exit_code == 0:
        return "ok", None
    if not state.seen_result and exit_code is not None and exit_code in (143, -15):
        return "failed", "terminated"
    return "failed", error_kind(state)


def summary(state: StreamState) -> dict:
    """The details a result record carries (no prompt text, no secrets)."""
    record = {"session_id": state.session_id, "model": state.model,
              "cost_usd": state.cost_usd, "turns": state.turns, "tokens": state.tokens}
    if state.api_retries:
        record["api_retries"] = state.api_retries
    if state.permission_denials:
        record["permission_denials"] = [
            {"tool": d.get("tool_name"), "tool_use_id": d.get("tool_use_id"),
             "path": (d.get("tool_input") or {}).get("file_path")}
            for d in state.permission_denials]
    if state.resets_at is not None:
        record["resets_at"] = state.resets_at
    return record
