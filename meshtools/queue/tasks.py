"""What a task is. Pure: validation and normalisation, no Redis.

A task is a JSON object: `id` (given or generated), `prompt`, optional `role`,
`max_attempts`, `timeout` (seconds), and any other keys as free metadata, kept as given.
"""

import os
import time

from ..core.errors import BadInput
from ..core.ids import validate_name

DEFAULT_MAX_ATTEMPTS = 3
MAX_PROMPT = 1 << 20


def new_id() -> str:
    """Sortable by creation time, unique without coordination."""
    return f"t{time.time_ns() // 1000:x}{os.urandom(3).hex()}"


def normalise(raw, where: str = "task") -> dict:
    """A complete task from what a user gave, or BadInput naming where and what is wrong."""
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: a task is a JSON object")
    task = dict(raw)
    try:
        task["id"] = validate_name(task["id"], "task id") if "id" in task else new_id()
    except BadInput as e:
        raise BadInput(f"{where}: {e}")
    prompt = task.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadInput(f"{where}: needs a non-empty string 'prompt'")
    if len(prompt) > MAX_PROMPT:
        raise BadInput(f"{where}: prompt longer than {MAX_PROMPT} characters")
    if task.get("role") is not None:
        try:
            validate_name(task["role"], "role")
        except BadInput as e:
            raise BadInput(f"{where}: {e}")
    attempts = task.setdefault("max_attempts", DEFAULT_MAX_ATTEMPTS)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 100:
        raise BadInput(f"{where}: max_attempts must be an integer from 1 to 100")
    timeout = task.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout <= 0):
        raise BadInput(f"{where}: timeout must be a positive number of seconds")
    return task


def result_record(task: dict, outcome, **fields) -> dict:
    """A task's result: the core keys (and fields), then the executor's details (cost,
    turns, ...), then the task's own keys (prompt, role, metadata) so that a reader such as
    the anchor can act on it; neither ever masks a core key. Secrets in the output or
    the task are redacted (core.redact): every reader and writer of a result gets this."""
    from ..core import clock
    from ..core.redact import redact

    record = {"ts": clock.iso(), "kind": "result", "id": task["id"], **fields,
              "status": outcome.status, "exit_code": outcome.exit_code,
              "duration": round(outcome.duration, 4), "output": outcome.output}
    for key, value in (outcome.details or {}).items():
        record.setdefault(key, value)
    for key, value in task.items():
        if key not in ("max_attempts", "timeout"):
            record.setdefault(key, value)
    return redact(record)
