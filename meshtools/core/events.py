"""The mesh's event log: everything that changes the mesh is also appended here.

One JSON line per event in MESH_HOME/events.jsonl, appended with a single O_APPEND write so
that concurrent writers never interleave, rotated to events.jsonl.1 past a size cap. The
commands that write here need no Redis; meshtools.queue.mirror copies the log into the
events stream, each event once.
"""

import os

from . import clock, fs, jsonl, proc

MAX_BYTES = 8 << 20


def make(event: str, /, **fields) -> dict:
    """An event record; events never carry secrets (core.redact)."""
    from .redact import redact

    record = {"ts": clock.iso(), "event": event}
    record.update(redact(fields))
    record.setdefault("host", proc.hostname())
    return record


def emit(home, event: str, /, make_home: bool = True, **fields) -> dict:
    """Append one event; the log is best-effort and never fails the command that changed state.
    make_home=False: a MESH_HOME that is gone stays gone (the event is dropped), for a
    long-lived process whose mesh may be deleted under it at any moment."""
    record = make(event, **fields)
    line = (jsonl.dumps(record) + "\n").encode()
    try:
        if make_home:
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
    lines, _ = lines_after(home, None)
    for line in lines:
        record = jsonl.try_parse(line)
        if record:
            yield record


def lines_after(home, position: str | None, limit: int | None = None,
                until: str | None = None) -> tuple[list[str], str | None]:
    """The log's complete lines after `position` (None: from the start), at most `limit`,
    none past `until`; and the position after the last one given.

    A position is "<file>:<offset>", where <file> names one log file for its whole life: its
    inode (kept by the rotation's rename) and a checksum of its first line (inodes are
    reused). So a position taken before a rotation still says where to go on, and one whose
    file is gone altogether (rotated twice) starts over at the oldest file left."""
    since, end = _position(position), _position(until)
    files = _open_log(home)
    try:
        names = [name for name, _ in files]
        first = names.index(since[0]) if since and since[0] in names else 0
        lines, after = [], position
        for name, f in files[first:]:
            offset = since[1] if since and name == since[0] else 0
            stop = end[1] if end and name == end[0] else None
            f.seek(offset)
            for raw in f:
                if not raw.endswith(b"\n") or (stop is not None and offset >= stop):
                    break  # a line still being written, or past `until`
                if limit is not None and len(lines) >= limit:
                    return lines, after
                offset += len(raw)
                after = f"{name}:{offset}"
                text = raw.decode("utf-8", "replace").strip()
                if text:
                    lines.append(text)
            if stop is not None:
                break
        return lines, after
    finally:
        for _, f in files:
            f.close()


def _open_log(home) -> list:
    """(name, binary file) of the rotated log and the live one, oldest first, those that
    exist. The live one is opened first: should a rotation come in between, the "rotated"
    file is the very file already open as live, and is not read twice."""
    import zlib

    opened = []
    for path in (home.events_file, home.events_file + ".1"):
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            continue
        first_line = f.readline()
        if not first_line.endswith(b"\n"):  # nothing complete to read, nor to name it by
            f.close()
            continue
        name = f"{os.fstat(f.fileno()).st_ino}.{zlib.crc32(first_line):08x}"
        if any(name == seen for seen, _ in opened):
            f.close()
            continue
        opened.insert(0, (name, f))
    return opened


def _position(text: str | None) -> tuple[str, int] | None:
    name, _, offset = (text or "").rpartition(":")
    try:
        return (name, int(offset)) if name else None
    except ValueError:
        return None
