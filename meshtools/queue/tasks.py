"""What a task is. Pure: validation and normalisation, no Redis.

A task is a JSON object: `id` (given or generated), `prompt`, optional `role`,
`max_attempts`, `timeout` (seconds), and any other keys as free metadata, kept as given.
Every number in it is finite: JSON has no NaN or Infinity, though Python's json reads them.

The worker checks each entry it reads as a push checks it (`from_entry`): an entry written
by anything else (a raw XADD, an older version) that fails is dead-lettered, never run.
"""

import json
import math
import os
import time

from ..core.errors import BadInput
from ..core.ids import validate_name, validate_task_id

DEFAULT_MAX_ATTEMPTS = 3
MAX_PROMPT = 1 << 20
RAW = "_raw"  # a dead letter's entry that was no task: see unrunnable()
ATTEMPT = "_attempt"  # on the copy a worker hands its executor: the attempt it counted


def new_id() -> str:
    """Sortable by creation time, unique without coordination."""
    return f"t{time.time_ns() // 1000:x}{os.urandom(3).hex()}"


def normalise(raw, where: str = "task") -> dict:
    """A complete task from what a user gave, or BadInput naming where and what is wrong."""
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: a task is a JSON object")
    task = dict(raw)
    try:
        task["id"] = validate_task_id(task["id"]) if "id" in task else new_id()
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
                                or not 0 < timeout < math.inf):
        raise BadInput(f"{where}: timeout must be a positive finite number of seconds")
    try:
        json.dumps(task, allow_nan=False)
    except ValueError:
        raise BadInput(f"{where}: NaN and Infinity are not numbers a task may hold")
    _refuse_secrets(task, where)
    return task


def _refuse_secrets(task: dict, where: str) -> None:
    """A task is stored in Redis (and its append-only file) and copied into results, so a
    secret in it would be kept; masking it would run a different task than the one given.
    So it is refused, and the secret reaches the task through the worker's environment."""
    from ..core.redact import redact

    keys = [key for key, value in task.items() if redact({key: value}) != {key: value}]
    if keys:
        raise BadInput(f"{where}: {', '.join(map(repr, keys))} carries what looks like a "
                       "secret; give secrets to tasks through the worker's environment")


def batch(lines: list[tuple[int, dict]], overrides: dict, source: str = "stdin") -> list[dict]:
    """The tasks of (line number, record) pairs, or BadInput before any is used: a batch is
    all or nothing, and one id twice in it is refused (the second would be dropped as a
    duplicate of the first)."""
    tasks, seen = [], {}
    for lineno, record in lines:
        task = normalise({**overrides, **record}, f"{source} line {lineno}")
        if task["id"] in seen:
            raise BadInput(f"{source} lines {seen[task['id']]} and {lineno}: the same task id "
                           f"{task['id']!r}")
        seen[task["id"]] = lineno
        tasks.append(task)
    return tasks


def from_entry(fields: dict, entry: str) -> dict:
    """The task a queue entry carries, checked as a push checks it (an id is required: one
    generated here would differ on each delivery); BadInput says what is wrong."""
    where = f"entry {entry}"
    if "task" not in fields:
        raise BadInput(f"{where}: no 'task' field")
    try:
        raw = json.loads(fields["task"])
    except ValueError as e:
        raise BadInput(f"{where}: malformed JSON ({e})")
    if isinstance(raw, dict) and "id" not in raw:
        raise BadInput(f"{where}: no task id")
    return normalise(raw, where)


def unrunnable(fields: dict, entry: str) -> dict:
    """What a dead letter keeps of an entry that `from_entry` refused: the entry's text as
    given (`_raw`: kept verbatim, NaN and all, never re-encoded), under its own id when
    that is valid, else `entry-<entry id>`, so that it can be listed and purged."""
    text = fields.get("task")
    try:
        given = json.loads(text)
        task_id = validate_task_id(given.get("id"))
    except (TypeError, ValueError, AttributeError, BadInput):
        task_id = f"entry-{entry}"
    return {"id": task_id, RAW: text if isinstance(text, str) else json.dumps(fields)}


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
