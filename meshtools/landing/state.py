"""What a landing leaves in MESH_HOME/landing/ for the next pass and for `meshctl status`.

  journal.json  written just before main moves, removed once main and its checkout are
                both at the new commit: while it is there, a landing may have been cut off
                between the two, and the next pass finishes it (landing.advance.recover).
  blocked.json  why landing waits (the main checkout has uncommitted changes, an
                interrupted landing cannot be finished...), written when a pass refuses and
                removed by the next pass that gets through, so status can say it.
  scratch/      the detached worktree a pass applies its candidates in and gates them in
                (landing.scratch); never the user's checkout.
"""

import contextlib
import os

from ..core import clock, fs

DIR = "landing"


def path(home, name: str) -> str:
    return home.sub(DIR, name)


def scratch_path(home) -> str:
    return path(home, "scratch")


def _write(home, name: str, record: dict) -> None:
    home.ensure(DIR)
    fs.atomic_write_json(path(home, name), dict(record, ts=clock.iso()))


def _read(home, name: str) -> dict | None:
    try:
        found = fs.read_json(path(home, name))
    except (ValueError, OSError):  # a torn or unreadable file says nothing
        return None
    return found if isinstance(found, dict) else None


def _clear(home, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path(home, name))


def write_journal(home, record: dict) -> None:
    _write(home, "journal.json", record)


def journal(home) -> dict | None:
    return _read(home, "journal.json")


def clear_journal(home) -> None:
    _clear(home, "journal.json")


def pass_running(home) -> bool:
    """Whether a landing pass holds the pick lock now (its journal is then no leftover)."""
    import fcntl

    try:
        fd = os.open(home.pick_lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def waiting(home) -> dict:
    """What `meshctl status` says of landing: {blocked: why it waits, or None; interrupted:
    the journal of a landing cut off after main moved, or None}."""
    journal_ = journal(home)
    if journal_ is not None and pass_running(home):
        journal_ = None  # a pass is moving main right now
    return {"blocked": blocked(home), "interrupted": journal_}


def note_blocked(home, reason: str, task: str | None = None) -> None:
    _write(home, "blocked.json", {"reason": reason, "task": task})


def blocked(home) -> dict | None:
    """{ts, reason, task} of the last pass that had to wait, or None."""
    return _read(home, "blocked.json")


def clear_blocked(home) -> None:
    _clear(home, "blocked.json")
