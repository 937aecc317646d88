"""The mesh's event log: everything that changes the mesh is also appended here.

One JSON line per event in MESH_HOME/events.jsonl, appended with a single O_APPEND write so
that concurrent writers never interleave, rotated to events.jsonl.1 past a size cap. The queue
issue mirrors events into a Redis stream; readers follow the file until then.
"""

import os
import re

from . import clock, fs, jsonl, proc

MAX_BYTES = 8 << 20
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|authorization)", re.I)
_SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9_-]{8,}|gh[pousr]_[A-Za-z0-9]{16,})")


def redact(value):
    """Events never carry secrets: mask secret-looking keys and values, recursively."""
    if isinstance(value, dict):
        return {k: "[redacted]" if _SECRET_KEY.search(str(k)) else redact(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub("[redacted]", value)
    return value


def make(event: str, /, **fields) -> dict:
    record = {"ts": clock.iso(), "event": event}
    record.update(redact(fields))
    record.setdefault("host", proc.hostname())
    return record


def emit(home, event: str, /, **fields) -> dict:
    """Append one event; the log is best-effort and never fails the command that changed state."""
    record = make(event, **fields)
    line = (jsonl.dumps(record) + "\n").encode()
    try:
        fs.ensure_dir(home.path)
        fd = os.open(home.events_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, fs.FILE_MODE)
        try:
            os.write(fd, line)
            if os.fstat(fd).st_size > MAX_BYTES:
                _rotate(home)
        finally:
            os.close(fd)
    except OSError:
        pass
    return record


def _rotate(home) -> None:
    with fs.flocked(home.events_file + ".lock"):
        try:
            if os.stat(home.events_file).st_size > MAX_BYTES:
                os.replace(home.events_file, home.events_file + ".1")
        except FileNotFoundError:
            pass


def read(home):
    """Every event in the log, oldest first (the rotated file, then the live one)."""
    for path in (home.events_file + ".1", home.events_file):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, 1):
                    try:
                        record = jsonl.parse_line(line, lineno, path)
                    except Exception:
                        continue
                    if record:
                        yield record
        except FileNotFoundError:
            continue
