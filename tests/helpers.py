"""Small helpers the test modules share."""

import json
import time


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


def run_tree(pid: int) -> list:
    """The supervisor pid and every process under it (psutil), but the mesh's Redis: a
    worker may have started it on first need, and it outlives any run by design."""
    import psutil

    from meshtools.core.home import MeshHome
    from meshtools.queue.server import EmbeddedRedis

    redis = EmbeddedRedis(MeshHome.find()).pid()
    top = psutil.Process(pid)
    return [top, *(p for p in top.children(recursive=True) if p.pid != redis)]


def on_terminal(argv: list[str], env: dict | None = None) -> tuple[int, str, str]:
    """Run argv with stdout on a pseudo-terminal (as a person sees it) and stderr on a pipe:
    (exit status, what the terminal showed, stderr)."""
    import os
    import pty
    import subprocess

    parent, child = pty.openpty()
    proc = subprocess.Popen(argv, stdout=child, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))
    os.close(child)
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
