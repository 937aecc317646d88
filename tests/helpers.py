"""Small helpers the test modules share."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil

BIN = os.path.dirname(sys.executable)  # the venv's bin dir, where the entry points live
FAKES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakes")
USAGE_LIMITED, USAGE_LIMIT = "usage_limited", "usage_limit"  # a result's status, a pause's reason


def wait_until(predicate, timeout=10.0):
    """Poll until predicate() is truthy; fail the test if it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition never became true")


def wait_for_output(pipe, text: str, timeout=10.0) -> str:
    """Read a child's pipe until text appears (a line the child says when something has
    happened); returns what was read. Reads the fd itself, unbuffered, so communicate()
    gets the rest. Fails the test if the pipe closes or the time runs out first."""
    import os
    import selectors

    fd, seen = pipe.fileno(), b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while text.encode() not in seen:
            left = deadline - time.monotonic()
            chunk = os.read(fd, 4096) if left > 0 and selector.select(left) else b""
            if not chunk:
                raise AssertionError(f"{text!r} never came; the pipe said {seen!r}")
            seen += chunk
    return seen.decode(errors="replace")


def lock_table(mesh_home):
    path = mesh_home / "locks" / "table.json"
    return json.loads(path.read_text()) if path.exists() else {"locks": {}, "waits": {}}


def redis_of(mesh_home):
    """A client of the test's own Redis (the embedded one in its MESH_HOME, started on
    first need)."""
    from meshtools.core.home import MeshHome
    from meshtools.queue.connection import connect

    return connect(MeshHome(str(mesh_home)))


def register_dead(run, role: str, session: str) -> None:
    """A session registered by a process that has died since (a dead peer)."""
    gone = subprocess.Popen(["sleep", "60"])
    run("coord-register", "--role", role, "--id", session, "--pid", str(gone.pid), check=0)
    gone.kill()
    gone.wait()


def run_tree(pid: int) -> list:
    """The supervisor pid and every process under it (psutil), but the mesh's Redis: a
    worker may have started it on first need, and it outlives any run by design."""
    from meshtools.core.home import MeshHome
    from meshtools.queue.server import EmbeddedRedis

    redis = EmbeddedRedis(MeshHome.find()).pid()
    top = psutil.Process(pid)
    return [top, *(p for p in top.children(recursive=True) if p.pid != redis)]


def read_terminal(parent: int) -> bytes:
    """All a pseudo-terminal shows until its other end closes; the fd is closed after."""
    import os

    out = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        out += chunk
    os.close(parent)
    return out


def on_terminal(argv: list[str], env: dict | None = None,
                columns: int | None = None) -> tuple[int, str, str]:
    """Run argv with stdout on a pseudo-terminal (as a person sees it) and stderr on a pipe:
    (exit status, what the terminal showed, stderr). columns: the terminal's width, set on
    the pty (TIOCSWINSZ) before the child starts ($COLUMNS and $LINES unset)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    parent, child = pty.openpty()
    environ = dict(os.environ, **(env or {}))
    if columns is not None:
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        for name in ("COLUMNS", "LINES"):
            environ.pop(name, None)
    proc = subprocess.Popen(argv, stdout=child, stderr=subprocess.PIPE, text=True, env=environ)
    os.close(child)
    out = read_terminal(parent)
    err = proc.stderr.read()
    proc.stderr.close()
    return proc.wait(), out.decode(), err



def interrupted_on_terminal(argv: list[str], shown_first: str, timeout=60.0) -> tuple[int, str]:
    """Start a long-running argv with stdout on a pseudo-terminal, read until it shows
    shown_first (fail the test if it never does), then ^C it: (exit status, what it showed)."""
    import os
    import pty
    import select
    import signal
    import subprocess

    parent, child = pty.openpty()
    proc = subprocess.Popen(argv, stdout=child, stderr=subprocess.DEVNULL)
    os.close(child)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while shown_first.encode() not in shown and time.monotonic() < deadline:
            if select.select([parent], [], [], 0.05)[0]:
                shown += os.read(parent, 4096)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=timeout)
        finally:
            proc.kill()  # never left behind, whatever failed
            proc.wait()
            os.close(parent)
    assert shown_first.encode() in shown, shown
    return code, shown.decode()


def dash_snapshot(peers: int = 6, events: int = 40, gpus: int = 1) -> dict:
    """A mesh snapshot in the shared shape (see meshtools/dash/render.py), made up but
    plausible: peers of every state, queues, a dead letter, a budget, GPU samples, events.
    The dash tests and bench/dash.py draw it."""
    roles = ("builder", "research", "triage", "memory", "security", "groomer")
    states = ("alive", "alive", "stale", "dead", "FATAL", "stuck", "paused")
    rows = [{"id": f"{roles[i % 6]}-{i + 1}", "role": roles[i % 6],
             "state": states[i % len(states)], "pid": 1000 + i, "host": "h",
             "phase": "waiting" if i % 3 else "tool Edit", "phase_age": 5.0 * i,
             "heartbeat_age": float(i), "task": None if i % 3 else f"t-{i:04d}",
             "task_age": 3.0 * i if i % 3 == 0 else None,
             "worktree": f"/w/repo-wt-{roles[i % 6]}", "branch": f"mesh/{roles[i % 6]}"}
            for i in range(peers)]
    return {
        "ts": "2026-12-02T15:04:05Z", "mesh": "repo", "roles": [*roles, "anchor"],
        "redis": {"url": "unix:///m/redis.sock", "up": True, "version": "7.2", "rtt_ms": 0.4,
                  "used_memory": 1_500_000, "persistence": {"aof": True, "rdb": False},
                  "age": 0.5, "error": None},
        "peers": rows,
        "queues": [{"kind": "queue", "queue": "default", "length": 3, "pending": 1,
                    "oldest_pending_age": 42.0, "consumers": [], "dead": 0},
                   {"kind": "queue", "queue": "builder", "length": 0, "pending": 0,
                    "oldest_pending_age": None, "consumers": [], "dead": 1}],
        "dead": {"count": 1, "by_queue": {"builder": 1}, "ids": ["1700000000000-0"]},
        "pause": None,
        "budget": {"spent_today_usd": 1.25, "daily_usd": 10.0,
                   "by_role": {"builder": 0.75, "research": 0.5}},
        "procs": {r["id"]: {"cpu": float(7 * i % 100), "rss": 50_000_000 + i * 1_000_000}
                  for i, r in enumerate(rows) if r["state"] != "dead"},
        "git": {role: {"branch": f"mesh/{role}", "unpicked": i,
                       "forecast": "conflict" if role == "triage" else "clean"}
                for i, role in enumerate(roles)},
        "gpus": [{"index": g, "name": "H200",
                  "util_history": [(g * 13 + s * 7) % 101 for s in range(60)],
                  "mem_history": [40.0] * 60, "mem_used": 55 << 30, "mem_total": 139 << 30}
                 for g in range(gpus)],
        "services": [{"name": "memcache", "ok": True, "latency_ms": 1.2, "detail": None}],
        "offload": [{"name": "ollama", "ok": True, "latency_ms": 12.0, "models": 3},
                    {"name": "openrouter", "ok": False, "detail": "unreachable"}],
        "events": [{"ts": f"2026-12-02T15:{i // 60 % 60:02d}:{i % 60:02d}Z",
                    "event": ("task.enqueued", "task.done", "lock.granted",
                              "task.failed")[i % 4],
                    "peer": rows[i % peers]["id"] if peers else None, "task": f"t-{i:04d}"}
                   for i in range(events)],
        "problems": [{"kind": "dead", "subject": r["id"], "text": f"{r['id']} is dead"}
                     for r in rows if r["state"] == "dead"],
    }


# --- git -----------------------------------------------------------------------------------


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(cwd, path, text, message):
    """Write path (relative to cwd) and commit it there; the new commit's sha."""
    full = os.path.join(cwd, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)
    git(cwd, "add", path)
    git(cwd, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    return git(cwd, "rev-parse", "HEAD")


# --- commands and their records ------------------------------------------------------------


def status(run, *args, check=None):
    return run("meshctl", "status", *args, check=check, timeout=60)


def of_kind(result, kind):
    return [r for r in result.records if r["kind"] == kind]


def session_record(run, sid):
    return next(r for r in run("coord-peers", "--json", check=0).records if r["id"] == sid)


def calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def redis_events(mesh_home, prefix=""):
    records = [json.loads(f["e"]) for _, f in redis_of(mesh_home).xrange("mesh:events")]
    return [r for r in records if r["event"].startswith(prefix)]


def file_events(mesh_home, prefix):
    path = mesh_home / "events.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in records if r["event"].startswith(prefix)]


def paused(mesh_home):
    """The mesh's pause in force (its record), or None."""
    from meshtools.queue import pause
    from meshtools.queue.names import Names

    return pause.Pauses(redis_of(mesh_home), Names()).paused()


# --- workers and supervisors ---------------------------------------------------------------


def spawn(run, *args, check=0):
    return run("mesh-spawn", *args, "--json", check=check, timeout=60)


def spawn_worker(run, role="builder"):
    record = run("mesh-spawn", role, "--queue", "--agent", "shell", "--detach", "--json",
                 check=0, timeout=60).records[-1]
    wait_until(lambda: any(r["phase"] == "waiting" for r in of_kind(status(run), "session")),
               timeout=30)
    return record


def drain(*extra, capture=False):
    """A queue-drain worker. Its output is captured only for tests that read it: an unread
    pipe fills up (64 KiB of result lines) and stalls the worker."""
    stream = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(["queue-drain", *extra], stdout=stream, stderr=stream, text=True)


def pending(mesh_home) -> int:
    import redis

    try:
        return redis_of(mesh_home).xpending("tasks:queue:default", "mesh")["pending"]
    except redis.ResponseError:  # no group yet: the worker has not started
        return 0


def stop_tree(pid):
    """SIGTERM the supervisor; return every pid that was under it (to check none is left)."""
    try:
        tree = run_tree(pid)
    except psutil.NoSuchProcess:
        return [pid]
    os.kill(pid, signal.SIGTERM)
    psutil.wait_procs(tree[:1], timeout=30)
    return [p.pid for p in tree]


def kill_tree(pid):
    """kill -9 a supervisor and everything under it (its worker); wait until they are gone.
    (Its worker stops its task when the supervisor goes: a process may be gone first.)"""
    tree = run_tree(pid)
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)


def gone(pids):
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True
