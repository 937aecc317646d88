"""JSON lines in and out: the wire format between the tiny commands."""

import json
import math
import sys

from .errors import BadInput


def dumps(record: dict) -> str:
    """Strict JSON: a NaN or Infinity that got into a record (Python's json reads them)
    is written as null, never as a token that jq and other readers reject."""
    try:
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # rare: pay for the walk only then
        return json.dumps(_finite(record), separators=(",", ":"), ensure_ascii=False)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write(record: dict, stream=None) -> None:
    """One record, one line, flushed at once so that `--follow | jq` sees it live."""
    stream = stream or sys.stdout
    stream.write(dumps(record) + "\n")
    stream.flush()


def parse_line(line: str, lineno: int, source: str = "stdin") -> dict | None:
    """One JSON object from one line (None for a blank line); BadInput names the line."""
    if not line.strip():
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadInput(f"{source} line {lineno}: malformed JSON ({e.msg} at column {e.colno})")
    if not isinstance(value, dict):
        raise BadInput(f"{source} line {lineno}: expected a JSON object, got {type(value).__name__}")
    return value


def try_parse(line: str) -> dict | None:
    """The JSON object on a line, or None for anything else (a log's torn or foreign line)."""
    try:
        return parse_line(line, 0)
    except BadInput:
        return None


def read_all(stream, source: str = "stdin") -> list[dict]:
    """Every record of a stream, or BadInput before any is used: a batch is all or nothing."""
    records = []
    for lineno, line in enumerate(stream, 1):
        record = parse_line(line, lineno, source)
        if record is not None:
            records.append(record)
    return records
