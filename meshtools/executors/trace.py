"""What an agent did, kept per task: MESH_HOME/tasks/<id>/stream.jsonl. The one owner of
that file: executors write it (Writer), `meshctl trace` reads and follows it.

Each run of a task appends a `start` record (task, attempt, run, session, agent, role,
hops, the process writing it; its `ts` is when the run started), then every line its agent
printed as it arrives (a stream-json record as it is, redacted, with `ts` added; any other
line, and a plain executor's output, as an `output` record), then an `end` record (status, exit code,
duration, what the cap left out). One write per line, so a reader following the file sees
the run live.

`attempt` is the worker's count, the one its result records (a run a usage limit cut short
is not one, so two runs may share it); `run` numbers the runs in the file. A run outside a
queue (mesh-agent) has attempt = run.

The file is capped (MAX_BYTES, or $MESH_TRACE_MAX_BYTES): past the cap one `truncated`
record is written and further lines are only counted, except the agent's `result` and the
`end` record, which are always kept. Only the newest KEEP_TASKS tasks' traces are kept. A
trace never fails a task: a write that fails (a full disk) stops the trace, not the run.
"""

import contextlib
import os
import time

from ..core import clock, fs, jsonl, proc, redact
from ..core.errors import BadInput, ConfigError, did_you_mean
from ..queue.tasks import ATTEMPT

STREAM_FILE = "stream.jsonl"
MAX_BYTES = 2 << 20
MAX_ENV = "MESH_TRACE_MAX_BYTES"
KEEP_TASKS = 1000  # the newest tasks' traces are kept; older ones go as new tasks start
POLL = 0.1  # how often a follower looks for new lines

# the trace's own records: {"type": "trace", "subtype": ...}; output lines: "output"
TRACE, OUTPUT = "trace", "output"
START, END, TRUNCATED = "start", "end", "truncated"
_START = b'{"type":"trace","subtype":"start"'  # how a start line begins (see _runs)


def stream_file(home, task_id: str) -> str:
    return os.path.join(home.task_dir(task_id), STREAM_FILE)


def max_bytes(environ=os.environ) -> int:
    """$MESH_TRACE_MAX_BYTES (a whole number, 0 or more), else MAX_BYTES."""
    text = environ.get(MAX_ENV, "").strip()
    if not text:
        return MAX_BYTES
    if not text.isdigit():
        raise ConfigError(f"${MAX_ENV}: expected a whole number of bytes, got {text!r}")
    return int(text)


def marker(subtype: str, **fields) -> dict:
    """One of the trace's own records (start, end, truncated; waiting, left for a peer)."""
    return {"type": TRACE, "subtype": subtype, "ts": clock.iso(), **fields}


def is_marker(record: dict, subtype: str) -> bool:
    return record.get("type") == TRACE and record.get("subtype") == subtype


# --- writing ---------------------------------------------------------------------------------

class Writer:
    """One run's records appended to its task's stream.jsonl (0600, in a 0700 directory).
    `open` returns None without a mesh home: a run with nowhere to keep a trace keeps none."""

    def __init__(self, fd: int, size: int, limit: int):
        self._fd: int | None = fd
        self.size, self.limit = size, limit
        self.truncated = False
        self.skipped_lines = self.skipped_bytes = 0

    @classmethod
    def open(cls, home, task: dict, *, agent: str, session: str | None = None,
             role: str | None = None) -> "Writer | None":
        if home is None or not task.get("id"):
            return None
        path = stream_file(home, task["id"])
        try:
            home.ensure(os.path.dirname(path))
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, fs.FILE_MODE)
        except (OSError, ConfigError):
            return None
        writer = cls(fd, os.fstat(fd).st_size, max_bytes())
        if writer.size == 0:  # a new task: make room
            prune(home)
        run = _runs(path) + 1
        writer._write(marker(START, task=task["id"], attempt=task.get(ATTEMPT) or run, run=run,
                             session=session, agent=agent, role=role,
                             hops=task.get("hops", 0), **proc.identity()), always=True)
        return writer

    def record(self, line: dict) -> None:
        """One stream-json record the agent printed; its `result` is kept past the cap."""
        self._write({"ts": clock.iso(), **redact.redact(line)},
                    always=line.get("type") == "result")

    def output(self, text: str) -> None:
        """A line of plain output (a shell task's, a text agent's)."""
        text = text.rstrip("\n")
        self._write({"type": OUTPUT, "ts": clock.iso(), "text": redact.redact_text(text)})

    def end(self, outcome) -> None:
        """The run's last record (its Outcome; None: the run raised, status `aborted`),
        then the file is closed. Where lines were left out, the output's tail comes with
        it, so the end of the run is never lost."""
        if outcome is None:
            record = marker(END, status="aborted", exit_code=None, duration=None, error=None)
        else:
            record = marker(END, status=outcome.status, exit_code=outcome.exit_code,
                            duration=round(outcome.duration, 3),
                            error=(outcome.details or {}).get("error"))
        if self.truncated and outcome is not None:
            record.update(skipped_lines=self.skipped_lines, skipped_bytes=self.skipped_bytes,
                          output_tail=redact.redact_text(outcome.output or ""))
        self._write(record, always=True)
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, record: dict, always: bool = False) -> None:
        if self._fd is None:
            return
        data = (jsonl.dumps(record) + "\n").encode()
        if not always and self.size + len(data) > self.limit:
            if not self.truncated:
                self.truncated = True
                self._put((jsonl.dumps(marker(TRUNCATED, max_bytes=self.limit))
                           + "\n").encode())
            self.skipped_lines += 1
            self.skipped_bytes += len(data)
            return
        self._put(data)

    def _put(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)  # O_APPEND: one write, one whole line
            self.size += len(data)
        except OSError:
            self.close()


def traced(writer: Writer | None, run):
    """run() (an Outcome), the writer's end record written however it ends."""
    if writer is None:
        return run()
    outcome = None
    try:
        outcome = run()
        return outcome
    finally:
        writer.end(outcome)


def prune(home) -> list[str]:
    """Remove the traces of all but the newest KEEP_TASKS tasks, by last write;
    a task's work.json stays (mesh-pick TASK_ID needs it). Returns the ids pruned."""
    found = []
    for task_id in known_tasks(home):
        path = os.path.join(home.tasks, task_id, STREAM_FILE)
        try:
            found.append((os.stat(path).st_mtime_ns, task_id, path))
        except FileNotFoundError:  # pruned meanwhile by another worker
            continue
    found.sort(reverse=True)
    pruned = []
    for _, task_id, path in found[KEEP_TASKS:]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with contextlib.suppress(OSError):  # only when nothing else is in it
            os.rmdir(os.path.dirname(path))
        pruned.append(task_id)
    return pruned


def _runs(path: str) -> int:
    """How many runs the file already holds: its start lines (a line that begins so is a
    start record: the agent's own records are written with `ts` first)."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.startswith(_START))
    except OSError:
        return 0


# --- reading ---------------------------------------------------------------------------------

def known_tasks(home) -> list[str]:
    """The ids of the tasks that have a trace."""
    try:
        names = os.listdir(home.tasks)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if os.path.isfile(os.path.join(home.tasks, n, STREAM_FILE)))


def find(home, task_id: str, names=()) -> str:
    """The task's stream file; BadInput (65) when it has none, with a did-you-mean over
    the traced tasks (and names: what else the word may have meant)."""
    try:
        path = stream_file(home, task_id)
    except BadInput:
        path = None
    if path is None or not os.path.isfile(path):
        raise BadInput(f"no trace for task {task_id}"
                       + did_you_mean(task_id, [*known_tasks(home), *names]))
    return path


def read_from(path: str, offset: int = 0) -> tuple[list[dict], int]:
    """The whole records after offset, and the offset after the last whole line (a line
    still being written waits for the next read). A torn or foreign line is skipped."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    records = [r for r in map(jsonl.try_parse, data[:end].decode("utf-8", "replace")
                              .splitlines()) if r is not None]
    return records, offset + end


def last_run(records: list[dict]) -> list[dict]:
    """The records of the latest run (from its start record on)."""
    starts = [i for i, r in enumerate(records) if is_marker(r, START)]
    return records[starts[-1]:] if starts else records


def running(records: list[dict]) -> bool:
    """Whether the latest run is still going: it has no end record and the process that
    writes it lives."""
    run = last_run(records)
    if not run or not is_marker(run[0], START) or any(is_marker(r, END) for r in run):
        return False
    return alive(run[0])


def alive(record: dict) -> bool:
    """Whether the process a record names (pid, pid_start, host) lives; one on another
    host is taken to."""
    return proc.is_alive(record.get("pid"), record.get("pid_start"),
                         record.get("host")) is not False


def follow(path: str, offset: int, still=lambda: True, poll: float = POLL):
    """Yield the records appended to path after offset as they come, until an end record,
    or until still() says the run is over (after a last read)."""
    while True:
        records, offset = read_from(path, offset)
        for record in records:
            yield record
            if is_marker(record, END):
                return
        if not records:
            if not still():
                yield from read_from(path, offset)[0]
                return
            time.sleep(poll)


def follow_task(path: str, keep_following: bool = False):
    """A task's records so far; with keep_following, then its running run's as they
    come, until that run ends (or the process writing it is gone)."""
    records, offset = read_from(path)
    yield from records
    if keep_following and running(records):
        start = last_run(records)[0]
        yield from follow(path, offset, lambda: alive(start))


def follow_peer(home, peer: str, keep_following: bool = True, poll: float = POLL):
    """What a peer runs: its current run's records (as they come), then its next run's,
    and so on, each run once; a run over between two looks is still shown whole (the
    registry keeps the task before as last_task). Between runs one `waiting` marker;
    `left` when it is no longer a live session, and the end. Without keep_following: its
    current task's latest run (or the `waiting` marker) as it is now."""
    from ..coord import registry

    news = _News(home, peer)
    waiting = False
    while True:
        session = registry.get(home, peer) or {}
        task = session.get("task")
        found = news.run(task, session.get("last_task")) if keep_following else None
        if not found and not (session and alive(session)):
            yield marker("left", peer=peer)
            return
        if not keep_following:
            yield from (last_run(read_from(stream_file(home, task))[0]) if task
                        else [marker("waiting", peer=peer)])
            return
        if found:
            task, run, offset = found
            waiting = False
            yield from run
            if not any(is_marker(r, END) for r in run):
                yield from follow(stream_file(home, task), offset,
                                  lambda: _runs_task(home, peer, task), poll)
            continue
        if not task and not waiting:
            yield marker("waiting", peer=peer)
            waiting = True
        time.sleep(poll)


class _News:
    """Which of a peer's runs are news to its follower: started by the peer, not shown yet,
    and started since the follower began, or still running. A trace unchanged since the
    last look (size, mtime) is not read again: an idle peer costs a stat per look."""

    def __init__(self, home, peer: str):
        self.home, self.peer = home, peer
        self.began, self.shown, self.looked = clock.iso(), set(), {}

    def run(self, *tasks) -> tuple[str, list[dict], int] | None:
        """(task, the run's records so far, the offset after them), or None."""
        for task in dict.fromkeys(t for t in tasks if t):
            path = stream_file(self.home, task)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if self.looked.get(path) == (st.st_size, st.st_mtime_ns):
                continue
            self.looked[path] = (st.st_size, st.st_mtime_ns)
            records, offset = read_from(path)
            run = last_run(records)
            start = run[0] if run and is_marker(run[0], START) else {}
            key = (task, start.get("ts"))
            if (start.get("session") == self.peer and key not in self.shown
                    and (start.get("ts", "") >= self.began or running(records))):
                self.shown.add(key)
                return task, run, offset
        return None


def _runs_task(home, peer: str, task: str) -> bool:
    from ..coord import registry

    session = registry.get(home, peer)
    return session is not None and session.get("task") == task and alive(session)

