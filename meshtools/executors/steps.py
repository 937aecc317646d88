"""A trace (executors.trace) as readable steps: what `meshctl trace` prints and the dash's
peer detail shows. Pure: records in, steps (plain dicts) out, steps in, lines out.

Each record makes its steps alone (no state between records), so a follower renders the
lines as they come. The stream-json reading is executors.stream's: a result's cost, turns
and error kind are what the worker records for the same run.
"""

from . import stream
from .trace import END, OUTPUT, START, TRACE, TRUNCATED

TEXT_WIDTH = 100
INPUT_WIDTH = 80
# What says most about a tool call, first found first: Read/Edit/Write, Bash, Grep/Glob, ...
INPUT_KEYS = ("file_path", "notebook_path", "command", "pattern", "path", "url", "query",
              "description", "prompt", "subagent_type")


def steps(records: list[dict]) -> list[dict]:
    return [step for record in records for step in record_steps(record)]


def record_steps(record: dict) -> list[dict]:
    """The steps of one record: a trace marker, an output line, or an agent's line."""
    kind, ts = record.get("type"), record.get("ts")
    if kind == TRACE:
        fields = {k: v for k, v in record.items() if k not in ("type", "subtype", "ts")}
        return [{"step": record.get("subtype"), "ts": ts, **fields}]
    if kind == OUTPUT:
        return [{"step": "output", "ts": ts, "text": record.get("text", "")}]
    return [dict(step, ts=ts) for step in _agent_steps(record)]


def _agent_steps(line: dict) -> list[dict]:
    kind, subtype = line.get("type"), line.get("subtype")
    state = stream.StreamState()
    stream.feed(state, line)
    if kind == "system" and subtype == "init":
        return [{"step": "init", "model": state.model, "session_id": state.session_id}]
    if kind == "system" and subtype == "api_retry":
        return [{"step": "retry", "attempt": line.get("attempt"),
                 "max_retries": line.get("max_retries"), "error": line.get("error")}]
    if kind == "rate_limit_event":
        info = line.get("rate_limit_info") or {}
        if info.get("status") == "allowed":
            return []
        return [{"step": "rate_limit", "status": info.get("status"),
                 "resets_at": state.resets_at or info.get("resetsAt")}]
    if kind == "result":
        return [{"step": "result", "status": "failed" if state.is_error else "ok",
                 "error": stream.error_kind(state) if state.is_error else None,
                 "cost_usd": state.cost_usd, "turns": state.turns,
                 "duration": _seconds(line.get("duration_ms")),
                 "text": first_line(state.result or "; ".join(state.errors))}]
    if kind in ("assistant", "user"):
        found = [_block_step(b) for b in stream.blocks(line)]
        if state.assistant_error:
            found.append({"step": "error", "error": state.assistant_error})
        return [s for s in found if s is not None]
    return []


def _block_step(block: dict) -> dict | None:
    kind = block.get("type")
    if kind == "text":
        return {"step": "text", "text": first_line(block.get("text"), TEXT_WIDTH)}
    if kind == "thinking":
        return {"step": "thinking", "text": first_line(block.get("thinking"), TEXT_WIDTH)}
    if kind == "tool_use":
        return {"step": "tool", "name": block.get("name"),
                "input": short_input(block.get("input"))}
    if kind == "tool_result":
        return {"step": "tool_result", "ok": not block.get("is_error"),
                "text": first_line(_result_text(block.get("content")))}
    return None


def short_input(value) -> str:
    """A tool call's input in a few words: its telling key's value (file_path, command,
    pattern, ...), else its first key=value; cut with … past INPUT_WIDTH."""
    if not isinstance(value, dict):
        return cut(str(value or ""), INPUT_WIDTH)
    for key in INPUT_KEYS:
        if isinstance(value.get(key), str) and value[key]:
            return first_line(value[key], INPUT_WIDTH)
    for key, item in value.items():
        return first_line(f"{key}={item}", INPUT_WIDTH)
    return ""


def _result_text(content) -> str:
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content or "")


def first_line(text, width: int = TEXT_WIDTH) -> str:
    """The first non-blank line, cut; … where anything was left out."""
    lines = [line for line in str(text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    return cut(lines[0].strip(), width, more=len(lines) > 1)


def cut(text: str, width: int, more: bool = False) -> str:
    if len(text) > width:
        return text[:width - 1] + "…"
    return text + " …" if more else text


def _seconds(ms) -> float | None:
    return round(ms / 1000, 1) if isinstance(ms, (int, float)) else None


# --- lines -----------------------------------------------------------------------------------

def render(steps: list[dict]) -> list[str]:
    """One line per step: the time (UTC, from the record), what it is, its short content."""
    lines = []
    for step in steps:
        text = _line(step)
        if text:
            lines.append(f"{_clock(step.get('ts'))} {text}")
    return lines


def _line(step: dict) -> str | None:
    kind = step.get("step")
    if kind == START:
        who = [str(step[k]) for k in ("agent", "role", "session") if step.get(k)]
        run = step.get("run")
        again = f" (run {run})" if run and run != step.get("attempt") else ""
        return " · ".join([f"── {step.get('task')} attempt {step.get('attempt')}{again}",
                           *who])
    if kind == END:
        skipped = (f", {step['skipped_lines']} lines past the cap"
                   if step.get("skipped_lines") else "")
        error = f" {step['error']}" if step.get("error") else ""
        return (f"── end {step.get('status')}{error} (exit {_dash(step.get('exit_code'))}, "
                f"{_dash(step.get('duration'))}s{skipped})")
    if kind == TRUNCATED:
        return f"… trace cut at {step.get('max_bytes')} bytes: later lines are not kept"
    if kind == "init":
        return f"init     {step.get('model')} · session {step.get('session_id')}"
    if kind == "text":
        return f"text     {step['text']}"
    if kind == "thinking":
        return f"thinks   {step['text']}"
    if kind == "tool":
        return f"tool     {step.get('name')} {step.get('input')}".rstrip()
    if kind == "tool_result":
        return f"         {'✔' if step.get('ok') else '✘'} {step.get('text')}".rstrip()
    if kind == "result":
        parts = [step["status"] + (f" ({step['error']})" if step.get("error") else "")]
        if step.get("cost_usd") is not None:
            parts.append(f"${step['cost_usd']:.4f}")
        parts.append(f"{step.get('turns')} turns")
        if step.get("duration") is not None:
            parts.append(f"{step['duration']}s")
        return "result   " + " · ".join(parts) + (f": {step['text']}" if step.get("text") else "")
    if kind == "rate_limit":
        if step.get("resets_at") is None:  # no window: a 429, "not your usage limit"
            return f"limit    rate limit {step.get('status')}"
        return f"limit    usage limit {step.get('status')}, resets at {step.get('resets_at')}"
    if kind == "retry":
        return (f"retry    {step.get('attempt')}/{step.get('max_retries')}: "
                f"{step.get('error')}")
    if kind == "error":
        return f"error    {step.get('error')}"
    if kind == "output":
        return f"out      {step.get('text')}"
    if kind == "waiting":
        return f"{step.get('peer')} is waiting for a task"
    if kind == "left":
        return f"{step.get('peer')} is no longer a live session"
    return None


def _clock(ts) -> str:
    """HH:MM:SS of an ISO-8601 time (2026-12-02T15:41:00.287Z), else blanks."""
    return ts[11:19] if isinstance(ts, str) and len(ts) >= 19 else " " * 8


def _dash(value) -> str:
    return "-" if value is None else str(value)
