"""Control requests: a stop or a restart for one spawn, dropped as one JSON file each into
spawns/<key>.control/ by atomic rename, and taken by the supervisor of <key>.

Each start gets a fresh spawn id (MESH_SPAWN_ID in the child). A request names the spawn it
means, so a stale `stop` aimed at an agent that has since been restarted can never kill its
successor: the supervisor obeys only a request for its current spawn.

Layout in MESH_HOME: spawns/<key>.json (the supervisor's state, written atomically),
spawns/<key>.control/ (the requests), spawns/<key>.lock (flock held by the live supervisor).
key = the session id, else pid-<pid>.
"""

import os
import re
import time

from ...core import clock, errors, fs, proc
from ...core.ids import validate_name

STOP, RESTART_CHILD = "stop", "restart"
CONTROLS = (STOP, RESTART_CHILD)
_SPAWN_ID = re.compile(r"[0-9a-f]{1,32}")


def spawn_dir(home) -> str:
    return home.ensure(home.spawns)


def state_path(home, key: str) -> str:
    return os.path.join(home.spawns, validate_name(key, "spawn key") + ".json")


def control_dir(home, key: str) -> str:
    return os.path.join(home.spawns, validate_name(key, "spawn key") + ".control")


def read_state(home, key: str) -> dict | None:
    try:
        return fs.read_json(state_path(home, key))
    except ValueError:
        return None


def request(home, key: str, control: str, spawn_id: str) -> dict:
    """Ask the supervisor of `key` to stop or restart the spawn `spawn_id`. It obeys only if
    that is still its current spawn; otherwise it drops the request (spawn.control_ignored).
    Returns the record of what was sent; `current` says whether it matched when sent."""
    if control not in CONTROLS:
        raise errors.UsageError(f"control must be one of {', '.join(CONTROLS)}")
    if not isinstance(spawn_id, str) or not _SPAWN_ID.fullmatch(spawn_id):
        raise errors.BadInput(f"invalid spawn id {spawn_id!r}: expected lowercase hex")
    state = read_state(home, key)
    if state is None:
        raise errors.BadInput(f"no supervisor for {key} (no {state_path(home, key)})")
    if proc.is_alive(state.get("supervisor_pid"), state.get("supervisor_start"),
                     state.get("host")) is False:
        raise errors.Unavailable(f"the supervisor of {key} (pid {state.get('supervisor_pid')}) "
                                 "is gone")
    message = {"control": control, "spawn": spawn_id, "ts": clock.iso(), "from": os.getpid()}
    folder = fs.ensure_dir(control_dir(home, key))
    fs.atomic_write_json(os.path.join(folder, f"{time.time_ns()}-{fs.unique_suffix()}.json"),
                         message)
    return {"ts": message["ts"], "kind": "control", "key": key, "control": control,
            "spawn": spawn_id, "current": state.get("spawn") == spawn_id,
            "supervisor_pid": state.get("supervisor_pid")}


def request_current(home, key: str, control: str) -> dict:
    """A person saying "stop builder-1": the request aimed at whatever spawn runs there now."""
    state = read_state(home, key)
    if state is None or not state.get("spawn"):
        raise errors.BadInput(f"no supervisor for {key} (no {state_path(home, key)})")
    return request(home, key, control, state["spawn"])


# --- the read side --------------------------------------------------------------------------

def take(folder: str):
    """The requests waiting in `folder`, oldest first, each removed as it is taken ({} for
    one that is not JSON); one another reader took first is skipped."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(folder, name)
        try:
            message = fs.read_json(path) or {}
        except (ValueError, UnicodeDecodeError, IsADirectoryError):
            message = {}
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue  # another reader took it
        yield message if isinstance(message, dict) else {}


def refusal(message: dict, current: str | None, stopping: bool) -> str | None:
    """Why a request is not obeyed ("stopping", "malformed", "stale"), None if it is."""
    control, spawn = message.get("control"), message.get("spawn")
    if stopping and spawn == current:
        return "stopping"
    if control not in CONTROLS:
        return "malformed"
    return "stale" if spawn != current else None
