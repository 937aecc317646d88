"""The anchor's deterministic loop: the part of orchestration that needs no model.

It follows tasks:results and, for each final result, decides: land the work of a role whose
commits go to main (mesh-pick with the gate), hand a failed or conflicting task back with
the failure as context (a new task, `<id>~<n>`, at most `max_handbacks` times), or just note
it. It enqueues the standing task of each scheduled role once per period — the task id names
the period, so a restarted anchor (or two of them) never enqueues it twice. And it watches
the registry: a peer that turns stale, dead or FATAL is reported; a dead one leaves the
mesh (coord.sessions.leave: session.unregistered, its locks released) and, if it was
spawned detached (or in tmux), is respawned, and so is a FATAL one (its supervisor gave up
on a crash loop) once it has been FATAL for `fatal_cooldown`, at most `fatal_respawns`
times, then given up on with one last event. Every decision is an event (anchor.*),
handed to `report` too (mesh-anchor prints it). And it copies the event log into the
events stream (queue.mirror).

A mesh has one anchor: its agent session (role anchor, concurrency 1) and this loop, which
is no session but holds MESH_HOME/anchor.lock for its life, so a second loop is refused.

Decisions are pure functions of data (`decide_landing`, `standing_tasks`, `handback_task`,
`peer_changes`, `fatal_retry`, `describe`); `Anchor` does the I/O.
"""

import os
import subprocess
import time
from dataclasses import dataclass

from ..coord.registry import DEFAULT_STUCK_AFTER, peer_state
from ..core import config, events, fs, lifecycle, proc
from ..core.errors import BadInput, Busy, Unavailable
from ..queue.results import Results
from ..queue.tasks import normalise
from . import spawns
from ..landing.pick import tail
from ..core.roles import Role, of_queue, parse_duration

TAIL = 1500
RESULTS_BATCH = 100


# --- pure decisions -----------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    action: str  # land | hand_back | give_up | done
    reason: str = ""


def decide_landing(result: dict, role: Role | None, work: dict | None,
                   max_handbacks: int) -> Decision:
    """What a final result calls for: land its work, done, hand it back, or give up."""
    if result.get("status") == "ok":
        if role is not None and role.lands and work and work.get("base") != work.get("head"):
            return Decision("land")
        return Decision("done", "nothing to land" if role is None or role.lands
                        else f"role {role.name} does not land work")
    why = result.get("reason") or f"{result.get('status')} (exit {result.get('exit_code')})"
    if result.get("status") == "invalid":  # an entry no worker could run: not a task to redo
        return Decision("give_up", why)
    return retry(result, why, max_handbacks)


def retry(result: dict, why: str, max_handbacks: int) -> Decision:
    """Hand a task that went wrong back, unless it was handed back enough times already."""
    handbacks = int(result.get("handback") or 0)
    if handbacks >= max_handbacks:
        return Decision("give_up", f"{why}; handed back {handbacks} time(s) already")
    return Decision("hand_back", why)


def handback_task(result: dict, reason: str, context: str) -> dict:
    """The task again, with what went wrong: a new id (`<id>~<n>`, a valid task id), so it
    is not a duplicate push. BadInput when it would not be a valid task."""
    n = int(result.get("handback") or 0) + 1
    root = result.get("parent") or result["id"]
    prompt = result.get("prompt") or ""
    return normalise({"id": f"{root}~{n}", "prompt": (
        f"{prompt}\n\n---\nA previous attempt at this task ({result['id']}) was handed back: "
        f"{reason}.\n{context}\nStart from the main branch as it is now (rebase your branch on "
        "it first) and try again.").strip(),
        "role": result.get("role"), "parent": root, "handback": n})


def standing_tasks(roles: dict[str, Role], now: float) -> list[tuple[dict, str]]:
    """(task, queue) for each scheduled role's standing task of the current period."""
    due = []
    for role in roles.values():
        if role.every:
            period = int(now // role.every)
            due.append(({"id": f"standing-{role.name}-{period}", "prompt": role.prompt,
                         "role": role.name, "standing": True}, role.queue))
    return due


def peer_changes(previous: dict[str, str], sessions: list[dict],
                 stuck_after: float = DEFAULT_STUCK_AFTER) -> tuple[dict, list[tuple]]:
    """(the states now, [(session record, old state, new state)] for each peer that changed
    into stale, dead, FATAL or stuck: alive, but in the same working phase (an agent's
    thinking or tool step) for stuck_after seconds)."""
    now, changes = {}, []
    for record in sessions:
        state = peer_state(record, stuck_after)
        now[record["id"]] = state
        if state != previous.get(record["id"]) and state in ("stale", "dead", "FATAL", "stuck"):
            changes.append((record, previous.get(record["id"]), state))
    return now, changes


def fatal_retry(record: dict, spawned: dict | None, cooldown: float, limit: int) -> str | None:
    """What a FATAL peer (a classified record) calls for: 'respawn' once it has been FATAL
    for cooldown seconds, 'give_up' once it was respawned limit times, None to wait (or
    when there is nothing to do: not spawned detached or in tmux, or given up on)."""
    if not spawned or not spawned.get("respawn") or spawned.get("fatal_given_up"):
        return None
    if int(spawned.get("fatal_respawns") or 0) >= limit:
        return "give_up"
    return "respawn" if (record.get("phase_age") or 0) >= cooldown else None


_VERBS = {"landed": "landed", "handed_back": "handed back", "give_up": "gave up on",
          "done": "done with", "scheduled": "scheduled", "respawned": "respawned",
          "respawn_failed": "could not respawn", "fatal_given_up": "gave up on FATAL"}


def describe(record: dict) -> str:
    """An anchor.* event as the one line a person watching mesh-anchor reads."""
    what = record["event"].removeprefix("anchor.")
    role = f" ({record['role']})" if record.get("role") else ""
    if what.startswith("peer_"):
        return f"peer {record.get('session')}{role} is {what.removeprefix('peer_')}"
    line = f"{_VERBS.get(what, what)} {record.get('task') or record.get('session')}{role}"
    if record.get("new_task"):
        line += f" as {record['new_task']}"
    if record.get("queue") and what == "scheduled":
        line += f" on {record['queue']}"
    if record.get("attempt"):
        line += f" after FATAL (attempt {record['attempt']} of {record['of']})"
    why = record.get("reason") or record.get("error")
    return f"{line}: {why}" if why else line


def hold_the_anchor(home) -> int:
    """Take the mesh's anchor lock (flock) for the rest of this process's life (the kernel
    drops it when the process ends, however it ends): Busy (75) while another mesh-anchor
    holds it, so two anchors never land or hand back at once. Returns the lock's fd."""
    import fcntl

    home.ensure()
    with lifecycle.starting(home):  # refused while meshctl down runs; held off till recorded
        fd = os.open(home.anchor_lock, os.O_RDWR | os.O_CREAT, fs.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (os.read(fd, 64).decode(errors="replace").split() or ["?"])[0]
            os.close(fd)
            raise Busy(f"another mesh-anchor (pid {holder}) runs this mesh: a mesh has one "
                       "anchor") from None
        os.ftruncate(fd, 0)
        me = proc.identity()  # pid and start time: meshctl down stops this very process
        os.write(fd, f"{me['pid']} {me['pid_start']} {me['host']}\n".encode())
    return fd


class AnchorWorker:
    """The anchor session's queue worker, which mesh-anchor --drain runs as its own child: it
    inherits MESH_SESSION (its consumer and phases are the anchor session's), and it has a
    process group of its own, so that a stop signal reaches it once, passed on by
    mesh-anchor (a second one would hand its task back at once)."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    @classmethod
    def start(cls, home, agent: str, workdir: str) -> "AnchorWorker":
        from . import launch
        from ..core.roles import ANCHOR, get

        argv = launch.child_argv(get(home, ANCHOR), workdir, True, agent)
        # a kill -9 of mesh-anchor stops its worker too (it hands its task back at once)
        return cls(subprocess.Popen(argv, stdin=subprocess.DEVNULL, process_group=0,
                                    preexec_fn=proc.die_with_parent()))

    def check(self) -> None:
        """Unavailable (69) once the worker has exited: the anchor goes with it, and its
        supervisor starts both again."""
        code = self.process.poll()
        if code is not None:
            raise Unavailable(f"the anchor's queue worker exited ({code}); the anchor stops "
                              "with it")

    def stop(self) -> None:
        """Pass a stop on (and each signal that comes meanwhile) and wait for the worker,
        which finishes its task first."""
        import signal

        if self.process.poll() is not None:
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda n, _frame: self.process.send_signal(n))
        self.process.send_signal(signal.SIGTERM)
        self.process.wait()
def anchor_holder(home) -> dict | None:
    """The running mesh-anchor's identity ({pid, pid_start, host}) from its anchor.lock,
    None when no process holds the lock (none runs, whatever the file still says)."""
    import fcntl

    try:
        fd = os.open(home.anchor_lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            words = os.read(fd, 256).decode(errors="replace").split()
        else:
            return None  # nobody holds it (ours goes with the close below)
    finally:
        os.close(fd)
    try:
        return {"pid": int(words[0]), "pid_start": int(words[1]), "host": words[2]}
    except (IndexError, ValueError):
        return None  # an older anchor's (a bare pid): no start time to check it by


# --- the loop -----------------------------------------------------------------------------

class Anchor:
    def __init__(self, home, broker, roles: dict[str, Role], repo_root: str,
                 gate: str | None = None, max_handbacks: int | None = None,
                 respawn: bool = True, report=None, schedule: bool = True):
        settings = config.section(home, "anchor")
        self.home, self.broker, self.roles, self.repo_root = home, broker, roles, repo_root
        self.gate = gate
        self.max_handbacks = (max_handbacks if max_handbacks is not None
                              else settings.value("max_handbacks"))
        self.respawn, self.scheduling = respawn, schedule
        self.stuck_after = settings.value("stuck_after")
        self.fatal_cooldown, self.fatal_respawns = fatal_settings(settings)
        self.report = report or (lambda record: None)
        self.peer_states: dict[str, str] = {}
        self.blocked: str | None = None  # why landing waits (main checkout dirty), if it does

    # results -------------------------------------------------------------------------------

    def cursor(self) -> str:
        try:
            with open(self.home.anchor_cursor) as f:
                return f.read().strip() or "0-0"
        except FileNotFoundError:
            return "0-0"

    def follow_results(self, block_ms: int | None, everything: bool = False) -> int:
        """Handle the results after the cursor, a batch of RESULTS_BATCH (every one there
        now with everything=True, as --once means); returns how many. The cursor moves
        after each one, so a crash re-handles at most one (landing is idempotent)."""
        results, handled = Results(self.broker), 0
        while True:
            entries = results.follow(self.cursor(), block_ms, count=RESULTS_BATCH)
            for entry, result in entries:
                try:
                    self.handle(result)
                except Busy as e:  # the main checkout is in use: this result waits
                    if str(e) != self.blocked:
                        events.emit(self.home, "anchor.blocked", reason=str(e))
                    self.blocked = str(e)
                    return handled
                self.blocked = None
                fs.atomic_write(self.home.anchor_cursor, entry, fsync=False)
                handled += 1
            if not everything or len(entries) < RESULTS_BATCH:
                return handled
            block_ms = None  # the rest: only what is there already

    def handle(self, result: dict) -> Decision:
        role = (self.roles.get(result["role"]) if result.get("role")
                else of_queue(self.roles, result.get("queue")))
        if role is not None:  # a task routed by queue alone names no role itself
            result = dict(result, role=role.name)
        work = result.get("work")  # the commits the task made (landing.work records them)
        decision = decide_landing(result, role, work, self.max_handbacks)
        if decision.action == "land":
            return self.land(result, work)
        context = f"Its output ended with:\n{tail(result.get('output') or '', chars=TAIL)}"
        return self.follow(result, decision, context)

    def land(self, result: dict, work: dict) -> Decision:
        from ..landing import gitops, history, pick

        main = gitops.main_of(self.repo_root, config.of(self.home))
        commits = history.range_commits(main.root, work.get("base"), work["head"])
        record = pick.pick(self.home, main, commits, role=result.get("role"),
                           task=result["id"], gate=self.gate)
        if record["status"] in ("picked", "skipped"):
            self.note("anchor.landed", result, record["status"], picked=record["picked"],
                      skipped=record["skipped"])
            return Decision("land", record["status"])
        if record["status"] == "conflict":
            reason = f"its commits conflict with main in {', '.join(record['conflicts'])}"
            context = f"Conflicting files: {', '.join(record['conflicts'])}."
        else:
            reason = f"the gate `{record.get('gate')}` failed on its commits applied onto main"
            context = ("The gate's output ended with:\n"
                       f"{tail(record.get('gate_output') or '', chars=TAIL)}")
        return self.follow(result, retry(result, reason, self.max_handbacks), context)

    def follow(self, result: dict, decision: Decision, context: str) -> Decision:
        """Carry out a decision other than landing: hand the task back, or note it."""
        if decision.action == "hand_back":
            return self.hand_back(result, decision.reason, context)
        self.note(f"anchor.{decision.action}", result, decision.reason)
        return decision

    def hand_back(self, result: dict, reason: str, context: str) -> Decision:
        try:
            task = handback_task(result, reason, context)
        except BadInput as e:  # e.g. an id at its length limit: note it, never stop here
            return self.follow(result, Decision("give_up", f"{reason}; cannot hand back: {e}"),
                               context)
        queue = result.get("queue") or "default"
        self.broker.push([(task, queue)])
        self.note("anchor.handed_back", result, reason, new_task=task["id"], queue=queue)
        return Decision("hand_back", reason)

    def note(self, event: str, result: dict, reason: str, **fields) -> None:
        self.decided(event, task=result.get("id"), role=result.get("role"),
                     status=result.get("status"), reason=reason, **fields)

    def decided(self, event: str, **fields) -> None:
        """A decision: an event, and a record for whoever watches (report)."""
        self.report(events.emit(self.home, event, **fields))

    # schedule ------------------------------------------------------------------------------

    def schedule(self, now: float | None = None) -> list[dict]:
        if not self.scheduling:
            return []
        due = standing_tasks(self.roles, now if now is not None else time.time())
        if not due:
            return []
        records = [r for r in self.broker.push(due) if not r.get("duplicate")]
        for record in records:
            self.decided("anchor.scheduled", task=record["id"], queue=record["queue"])
        return records

    # peers ---------------------------------------------------------------------------------

    def check_peers(self) -> list[tuple]:
        """Report each peer that changed; a dead one has left the mesh (its session ends
        here, its locks are released) and, if it was spawned to be, is respawned."""
        from ..coord import registry, sessions as lifecycle

        sessions = [registry.classify(self.home, r) for r in registry.all_sessions(self.home)]
        self.peer_states, changes = peer_changes(self.peer_states, sessions, self.stuck_after)
        for record, old, new in changes:
            self.decided(f"anchor.peer_{new.lower()}", session=record["id"],
                         role=record.get("role"), previous=old, pid=record.get("pid"))
            if new == "dead":
                lifecycle.leave(self.home, record["id"], lifecycle.DEAD)
            spawned = spawns.read(self.home, record["id"])
            if new == "dead" and self.respawn and spawned and spawned.get("respawn"):
                self.respawn_session(record, spawned)
        if self.respawn:
            for record in sessions:
                if self.peer_states.get(record["id"]) == "FATAL":
                    self.retry_fatal(record)
        return changes

    def respawn_session(self, record: dict, spawned: dict, **fields) -> None:
        """A dead detached or tmux session comes back as mesh-spawn started it (the same
        id, taken over from the dead)."""
        done = subprocess.run(spawned["respawn"], capture_output=True, text=True, timeout=120)
        self.decided("anchor.respawned" if done.returncode == 0 else "anchor.respawn_failed",
                     session=record["id"], role=record.get("role"), exit=done.returncode,
                     error=done.stderr.strip()[-300:] or None, **fields)

    def retry_fatal(self, record: dict) -> None:
        """Respawn a FATAL peer after the cool-down, a bounded number of times; the count
        lives in its spawn record, so a person's own mesh-spawn starts it over."""
        spawned = spawns.read(self.home, record["id"])
        action = fatal_retry(record, spawned, self.fatal_cooldown, self.fatal_respawns)
        if action is None:
            return
        attempts = int(spawned.get("fatal_respawns") or 0)
        if action == "give_up":
            spawns.update(self.home, record["id"], fatal_given_up=True)
            self.decided("anchor.fatal_given_up", session=record["id"], role=record.get("role"),
                         reason=f"FATAL again after {attempts} respawn(s)")
            return
        self.respawn_session(record, spawned, attempt=attempts + 1, of=self.fatal_respawns)
        spawns.update(self.home, record["id"], fatal_respawns=attempts + 1)

    # all of it -----------------------------------------------------------------------------

    def step(self, block_ms: int | None, everything: bool = False) -> int:
        self.schedule()
        self.check_peers()
        self.mirror_events()
        return self.follow_results(block_ms, everything)

    def mirror_events(self) -> int:
        """Copy the event log into the events stream (the anchor's loop is the one process
        of a running mesh that always holds Redis)."""
        from ..queue import mirror

        return mirror.forward(self.broker.redis, self.broker.names, self.home)[0]


def fatal_settings(settings: config.Section) -> tuple[float, int]:
    """([anchor] fatal_cooldown as seconds or a duration like 5m, [anchor] fatal_respawns)."""
    cooldown = settings.value("fatal_cooldown")
    try:
        cooldown = 0.0 if cooldown == 0 else parse_duration(cooldown)
    except ValueError as e:
        raise settings.error("fatal_cooldown", str(e))
    respawns = settings.value("fatal_respawns")
    if respawns < 0:
        raise settings.error("fatal_respawns", f"expected a count, got {respawns!r}")
    return cooldown, respawns
