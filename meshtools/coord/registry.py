"""The session registry: who is in the mesh, in what role, and whether they still live.

sessions/<id>/session.json, one per session. A new id is claimed with an atomic mkdir; every
change to a record (takeover, heartbeat, unregister, prune) happens under flock on
sessions/.registry.lock, so a heartbeat can never resurrect a record that a takeover replaced.

Liveness (pure, see `liveness`):
  dead   the pid is gone on this host (pid reuse caught by the start time), or, for a
         process on another host (whose pid we cannot check), the heartbeat is older than
         dead_after (600 s). A live process on this host is never dead, however quiet: a
         shell that registered and sent no heartbeat is still there, and so are its locks;
  stale  the heartbeat is older than stale_after (60 s): alive but maybe stuck;
  alive  otherwise.
"""

import math
import os
import sys
import time

from ..core import clock, config, fs, git, proc
from ..core.errors import BadInput, Busy, ConfigError
from ..core.home import MeshHome
from ..core.ids import validate_name

RECORD = "session.json"
# seconds in one working phase before a live agent is "stuck" ([anchor] stuck_after)
DEFAULT_STUCK_AFTER = config.default("anchor", "stuck_after")


def thresholds(home: MeshHome) -> tuple[float, float]:
    """(stale_after, dead_after): env MESH_STALE_AFTER/MESH_DEAD_AFTER, then config.toml.
    Either way a finite number of seconds, 0 or more, else ConfigError (78) naming it."""
    coord = config.section(home, "coord")
    return tuple(_seconds(env, coord, key) for env, key in
                 (("MESH_STALE_AFTER", "stale_after"), ("MESH_DEAD_AFTER", "dead_after")))


def _seconds(env: str, coord: config.Section, key: str) -> float:
    """One threshold: float() alone took "abc" (a crash, 70) and nan (never stale)."""
    text = os.environ.get(env)
    if not text:
        value = coord.value(key)  # finite, or a ConfigError naming file:line
        if value < 0:
            raise coord.error(key, f"expected seconds, 0 or more, got {value!r}")
        return value
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"${env}: expected a finite number of seconds, 0 or more, "
                          f"got {text!r}")
    return value


def liveness(record: dict, now: float, stale_after: float, dead_after: float,
             pid_alive: bool | None) -> tuple[str, float]:
    """('alive'|'stale'|'dead', heartbeat age in seconds). pid_alive is None when the
    process lives on another host and only the heartbeat can tell; True (the same pid and
    start time on this host) is never dead, so its id is never taken over."""
    try:
        beat = clock.parse_iso(record["heartbeat"])
    except (KeyError, TypeError, ValueError):
        beat = 0.0  # no readable heartbeat: as old as can be
    age = max(0.0, now - beat)
    if pid_alive is False or (pid_alive is None and age >= dead_after):
        return "dead", age
    return ("stale" if age >= stale_after else "alive"), age


def peer_state(record: dict, stuck_after: float = DEFAULT_STUCK_AFTER) -> str:
    """A classified record's state as a person judges it (the anchor, meshctl status):
    FATAL when its supervisor gave up on a crash loop, stuck when it is alive but in one
    working phase (an agent's thinking or tool step) for stuck_after seconds, else its
    liveness (alive, stale, dead)."""
    if record.get("phase") == "FATAL":
        return "FATAL"
    if record["state"] == "alive" and _working(record.get("phase")) and \
            (record.get("phase_age") or 0) >= stuck_after:
        return "stuck"
    return record["state"]


def _working(phase: str | None) -> bool:
    """Phases in which an agent should make progress (idle and finished ones never stick)."""
    return bool(phase) and (phase in ("starting", "thinking") or phase.startswith("tool "))


def classify(home: MeshHome, record: dict, now: float | None = None) -> dict:
    """The record with its state, heartbeat_age and phase_age filled in (as listed by
    coord-peers): a live heartbeat with an old phase is an agent stuck in one step."""
    stale, dead = thresholds(home)
    now = now if now is not None else time.time()
    alive = proc.is_alive(record.get("pid"), record.get("pid_start"), record.get("host"))
    state, age = liveness(record, now, stale, dead, alive)
    try:
        phase_age = round(max(0.0, now - clock.parse_iso(record.get("phase_since")
                                                            or record["started"])), 3)
    except (KeyError, TypeError, ValueError):
        phase_age = None
    return dict(record, state=state, heartbeat_age=round(age, 3), phase_age=phase_age)


def _dir(home: MeshHome, session_id: str) -> str:
    return os.path.join(home.sessions, validate_name(session_id, "session id"))


def _guard(home: MeshHome):
    home.ensure(home.sessions)
    return fs.flocked(os.path.join(home.sessions, ".registry.lock"))


def get(home: MeshHome, session_id: str) -> dict | None:
    try:
        return fs.read_json(os.path.join(_dir(home, session_id), RECORD))
    except (ValueError, IsADirectoryError):
        return None


def all_sessions(home: MeshHome, warn=None) -> list[dict]:
    """Every readable record, sorted by id; a corrupt one is reported through warn and skipped."""
    try:
        names = sorted(n for n in os.listdir(home.sessions) if not n.startswith("."))
    except FileNotFoundError:
        return []
    records = []
    for name in names:
        path = os.path.join(home.sessions, name, RECORD)
        try:
            record = fs.read_json(path)
        except (ValueError, UnicodeDecodeError, IsADirectoryError) as e:
            if warn:
                warn(f"skipping corrupt {path}: {e}")
            continue
        if record is not None:
            records.append(record)
    return records


def new_record(session_id: str, role: str, pid: int, phase: str | None,
               cwd: str | None = None) -> dict:
    worktree = git.find_worktree(cwd or os.getcwd())
    ident = proc.identity(pid)
    now = time.time()
    return {"ts": clock.iso(now), "kind": "session", "id": session_id, "role": role,
            **ident, "worktree": worktree.root if worktree else None,
            "branch": git.current_branch(worktree) if worktree else None,
            "started": clock.iso(now), "heartbeat": clock.iso(now),
            "phase": phase or "registered"}


def register(home: MeshHome, role: str, session_id: str | None, pid: int,
             phase: str | None = None, limit: int | None = None) -> tuple[dict, dict | None]:
    """Claim session_id (or the first free or dead `<role>-<n>`). Returns (record, the dead
    record it took over or None). A live holder of the id raises Busy (exit 75), as does a
    role that already has `limit` live sessions (one anchor per mesh)."""
    validate_name(role, "role")
    if session_id is not None:
        validate_name(session_id, "session id")
    if proc.start_time(pid) is None:
        raise BadInput(f"pid {pid}: no such process")
    with _guard(home):
        if limit is not None:
            check_limit(home, role, session_id, limit)
        if session_id is None:
            session_id = _free_slot(home, role)
        previous = _claim(home, session_id)
        record = new_record(session_id, role, pid, phase)
        fs.atomic_write_json(os.path.join(_dir(home, session_id), RECORD), record)
    return record, previous


def check_limit(home: MeshHome, role: str, session_id: str | None, limit: int) -> None:
    """Busy (75) when the role already has `limit` live sessions besides session_id."""
    now = clock.now()
    live = sorted(r["id"] for r in all_sessions(home)
                  if r.get("role") == role and r["id"] != session_id
                  and classify(home, r, now)["state"] != "dead")
    if len(live) >= limit:
        raise Busy(f"role {role} allows {limit} live session{'s' if limit > 1 else ''} in a "
                   f"mesh, and {', '.join(live)} {'is' if len(live) == 1 else 'are'} alive")


def _claim(home: MeshHome, session_id: str) -> dict | None:
    """mkdir the id's directory; if it exists, it may be taken over only from the dead."""
    directory = _dir(home, session_id)
    try:
        os.mkdir(directory, fs.DIR_MODE)
        return None
    except FileExistsError:
        pass
    previous = get(home, session_id)
    if previous is None:
        return None  # a claim that died before writing its record
    return _dead_or_busy(home, previous)


def check_free(home: MeshHome, session_id: str) -> None:
    """Busy (75) when the id is a session's that is not dead, before anything is started
    for it (mesh-spawn --id): a live process's id is never taken over."""
    previous = get(home, session_id)
    if previous is not None:
        _dead_or_busy(home, previous)


def _dead_or_busy(home: MeshHome, previous: dict) -> dict:
    current = classify(home, previous)
    if current["state"] != "dead":
        raise Busy(f"session id {previous['id']} is {current['state']}: pid "
                   f"{previous.get('pid')} on {previous.get('host')}, heartbeat "
                   f"{current['heartbeat_age']:.0f}s ago")
    return current


def _free_slot(home: MeshHome, role: str) -> str:
    n = 1
    while True:
        candidate = f"{role}-{n}"
        record = get(home, candidate)
        if record is None and not os.path.exists(_dir(home, candidate)):
            return candidate
        if record is not None and classify(home, record)["state"] == "dead":
            return candidate
        n += 1


KEEP = object()  # heartbeat(task=KEEP): the session's current task stays as it is


def heartbeat(home: MeshHome, session_id: str, phase: str | None = None,
              task=KEEP, unless_newer_than: float | None = None) -> tuple[dict, str | None]:
    """Refresh the heartbeat (and phase; and the task it runs now, an id or None: the one
    it ran before stays as last_task, so a run too short to be seen running is still
    found). Returns (record, the previous phase). With `unless_newer_than` (epoch seconds)
    the phase is kept if it was set after that time: a supervisor saying "running" for the
    child it just started must not overwrite what that child already said (`waiting`)."""
    _existing(home, session_id)  # an unknown id writes nothing, not even the registry lock
    with _guard(home):
        record = _existing(home, session_id)
        previous_phase = record.get("phase")
        now = clock.iso()
        record.update(ts=now, heartbeat=now)
        if unless_newer_than is not None and _set_after(record, unless_newer_than):
            phase = None
        if phase is not None and phase != previous_phase:
            record.update(phase=phase, phase_since=now)
        if task is not KEEP and task != record.get("task"):
            if record.get("task"):
                record["last_task"] = record["task"]
            record.update(task=task, task_since=now if task else None)
        fs.atomic_write_json(os.path.join(_dir(home, session_id), RECORD), record)
    return record, previous_phase


def _set_after(record: dict, epoch: float) -> bool:
    try:
        return clock.parse_iso(record["phase_since"]) > epoch
    except (KeyError, TypeError, ValueError):
        return False


def unregister(home: MeshHome, session_id: str, only_dead: bool = False) -> dict | None:
    """Remove the record and return it; BadInput (65) for an unknown id. only_dead: only
    if it is dead, judged under the lock (None otherwise, or when it is gone already)."""
    if not only_dead:
        _existing(home, session_id)
    with _guard(home):
        record = get(home, session_id)
        if only_dead and (record is None or classify(home, record)["state"] != "dead"):
            return None
        if record is None:
            raise BadInput(f"unknown session {session_id} (not registered)")
        _remove(_dir(home, session_id))
    return record


def prune(home: MeshHome) -> list[dict]:
    """Remove every dead session (re-checked under the lock); their inboxes stay."""
    removed = []
    with _guard(home):
        for record in all_sessions(home, warn=lambda m: print(m, file=sys.stderr)):
            current = classify(home, record)
            if current["state"] == "dead":
                _remove(_dir(home, record["id"]), ignore_errors=True)
                removed.append(current)
    return removed


def _existing(home: MeshHome, session_id: str) -> dict:
    record = get(home, session_id)
    if record is None:
        raise BadInput(f"unknown session {session_id} (not registered)")
    return record


def _remove(directory: str, ignore_errors: bool = False) -> None:
    import shutil  # only here: it costs every command's start-up ~2 ms (bz2, lzma)

    shutil.rmtree(directory, ignore_errors=ignore_errors)
