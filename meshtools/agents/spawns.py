"""spawns/<session>.spawn.json: what mesh-spawn recorded about a session it started (mode,
queue, worktree, the command that starts it again), and the anchor's FATAL respawns of it.
This module is its one reader and writer. (The supervisor's own state, spawns/<key>.json,
is supervisor.control's.)"""

import os

from ..core import fs
from ..core.ids import validate_name


def path(home, session_id: str) -> str:
    return os.path.join(home.spawns, f"{validate_name(session_id, 'session id')}.spawn.json")


def read(home, session_id: str) -> dict | None:
    """The record, None when there is none or it is unreadable."""
    try:
        return fs.read_json(path(home, session_id))
    except ValueError:
        return None


def write(home, session_id: str, info: dict) -> None:
    home.ensure(home.spawns)  # the supervisor may not have made it yet
    fs.atomic_write_json(path(home, session_id), info)


def update(home, session_id: str, **fields) -> None:
    """Change some fields of an existing record (none: nothing to change)."""
    info = read(home, session_id)
    if info is not None:
        write(home, session_id, dict(info, **fields))
