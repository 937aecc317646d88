"""The lock service: policy applied to a table, with process liveness, waits and events.

Deadlock victim rule: the claimant whose wait would close a cycle in the wait-for graph is
refused at once (exit 75) and keeps what it already holds; everyone else waits on. Since
every wait is recorded and checked inside the table's exclusive update, exactly one claimant
closes any cycle, so exactly one is refused. Its caller should release and retry.
"""

import os
import time
from typing import Callable

from ..core import clock, events, proc
from ..core.errors import Busy, Refused
from ..core.home import MeshHome
from . import graph, policy, scopes as scope_rules
from .table import FileLockTable, LockTable

POLL_MIN, POLL_MAX = 0.002, 0.05


class Deadlock(Busy):
    def __init__(self, victim: str, cycle: list[graph.Edge]):
        self.victim, self.cycle = victim, cycle
        super().__init__(f"deadlock: {graph.describe(cycle)}; refused {victim}'s wait "
                         "(release what you hold and retry)")


class Timeout(Busy):
    def __init__(self, blocking: dict[str, dict], waited: float | None):
        self.blocking = blocking
        held = describe(blocking)
        what = "busy" if not waited else f"still busy after {waited:g}s"
        super().__init__(f"{what}: {held}")


def describe(blocking: dict[str, dict]) -> str:
    """'docs (held by A since <iso>), web (...)': who stands in the way, and since when."""
    return ", ".join(f"{s} (held by {h['holder']} since {h['since']})"
                     for s, h in sorted(blocking.items()))


def _alive(owner: dict) -> bool | None:
    return proc.is_alive(owner["pid"], owner.get("pid_start"), owner.get("host"))


def is_dead(owner: dict) -> bool:
    """Only a process known to be gone is dead; one on another host is not ours to judge."""
    return _alive(owner) is False


class LockService:
    def __init__(self, home: MeshHome, table: LockTable | None = None,
                 registered: Callable[[str], dict | None] = lambda session_id: None):
        """registered: a session id's registry record, or None (the caller's lookup, e.g.
        coord.registry's, so the lock layer asks no other); by default none is registered."""
        self.home = home
        self.registered = registered
        self.table = table if table is not None else FileLockTable(home.locks)
        self.waiting_process = proc.identity()  # what owns a recorded wait

    # --- who is asking -------------------------------------------------------------------

    def claimant(self, session_id: str | None, owner_pid: int | None = None) -> policy.Claimant:
        """A registered session's locks are owned by its own process; anyone else's by owner_pid
        (default: the parent, the shell or agent that outlives this command)."""
        if session_id is not None and owner_pid is None:
            record = self.registered(session_id)
            if record and record.get("host") == proc.hostname() and record.get("pid"):
                return policy.Claimant(session_id, record["pid"], record.get("pid_start"),
                                       record["host"])
        pid = owner_pid if owner_pid is not None else os.getppid()
        return policy.Claimant(session_id or f"pid-{pid}", pid, proc.start_time(pid),
                               proc.hostname())

    def owners(self, session_id: str | None) -> set[tuple]:
        """The processes that count as the caller (policy.owner_key()s): this process and
        its ancestors (the shell, the agent, a `file-lock PATH -- CMD` around it), and the
        registered session's own process on this host."""
        host = proc.hostname()
        found = {(pid, started, host) for pid, started in proc.ancestors()}
        if session_id is not None:
            record = self.registered(session_id)
            if record and record.get("host") == host and record.get("pid"):
                found.add((record["pid"], record.get("pid_start"), host))
        return found

    def unproven(self, session_id: str | None, scopes: list[str],
                 generation: int | None = None) -> dict[str, str]:
        """scope -> why, for each scope the caller cannot be shown to hold (empty:
        it holds them all). The caller is session_id, else the calling shell (claimant())."""
        claimant_id = self.claimant(session_id).id
        owners, now, locks = self.owners(session_id), time.time(), self.snapshot()["locks"]
        missing = {}
        for scope in scopes:
            holding = locks.get(scope)
            why = policy.unproven(holding, claimant_id, owners, now, _alive)
            if why is None and generation is not None and holding["generation"] != generation:
                why = f"you hold generation {holding['generation']}, not the one given"
            if why is not None:
                missing[scope] = why
        return missing

    # --- scopes --------------------------------------------------------------------------

    def resolve(self, args: list[str], cwd: str | None = None) -> list[scope_rules.Resolved]:
        """Scopes of PATHs; cwd (default: this process's) only anchors relative PATHs: the
        repository is this process's, so a tool call cannot name another one by its cwd."""
        return list(map(scope_rules.resolver(self.home, cwd), args))

    # --- acquire / release ---------------------------------------------------------------

    def try_acquire(self, claimant: policy.Claimant, scopes: list[str], *, wait: bool,
                    lease: float | None = None) -> tuple[list[dict] | None, dict]:
        """One attempt, all scopes or none. Returns (granted, blocking); when wait is set and
        blocked, the wait is recorded and checked for a deadlock (raised as Deadlock)."""
        now, since = time.time(), clock.iso()
        with self.table.update() as table:
            reclaimed = policy.reap(table, now, is_dead)
            blocking = policy.blockers(table, claimant.id, scopes)
            cycle, new_wait = None, False
            if not blocking:
                policy.clear_wait(table, self.waiting_process)
                granted = policy.grant(table, claimant, scopes, now, lease, since)
            else:
                granted = None
                if wait:
                    new_wait = policy.set_wait(table, claimant.id, self.waiting_process,
                                               scopes, since)
                    cycle = graph.cycle_through(claimant.id, policy.wait_for_edges(table))
                    if cycle:
                        policy.clear_wait(table, self.waiting_process)
        for holding in reclaimed:
            events.emit(self.home, "lock.reclaimed", **_event_fields(holding))
        if cycle:
            events.emit(self.home, "lock.deadlock", victim=claimant.id,
                        cycle=[e._asdict() for e in cycle])
            raise Deadlock(claimant.id, cycle)
        if granted:
            for holding in granted:
                events.emit(self.home, "lock.granted", **_event_fields(holding))
        elif new_wait:
            events.emit(self.home, "lock.waiting", waiter=claimant.id, scopes=scopes,
                        blocked_by=sorted({h["holder"] for h in blocking.values()}))
        return granted, blocking

    def acquire(self, claimant: policy.Claimant, scopes: list[str], *,
                timeout: float | None = None, lease: float | None = None,
                on_wait: Callable[[dict[str, dict]], None] | None = None) -> list[dict]:
        """Wait for all scopes (timeout None: forever; 0: don't wait). Raises Timeout when
        time runs out and Deadlock when this wait would close a cycle. on_wait(blocking) is
        called once, when the wait begins."""
        scopes = sorted(set(scopes))
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_MIN
        try:
            while True:
                last_try = deadline is not None and time.monotonic() >= deadline
                granted, blocking = self.try_acquire(claimant, scopes, wait=not last_try,
                                                     lease=lease)
                if granted is not None:
                    return granted
                if last_try:
                    raise Timeout(blocking, timeout)
                if on_wait is not None:
                    on_wait(blocking)
                    on_wait = None
                left = None if deadline is None else deadline - time.monotonic()
                time.sleep(pause if left is None else max(0.0, min(pause, left)))
                pause = min(POLL_MAX, pause * 1.5) * _jitter()
        except BaseException:
            self._forget_wait()
            raise

    def _forget_wait(self) -> None:
        with self.table.update() as table:
            policy.clear_wait(table, self.waiting_process)

    def release(self, claimant_id: str, scopes: list[str] | None,
                force: bool = False, reason: str | None = None) -> list[dict]:
        """reason: why, when it is not the holder's own wish (it goes into the events)."""
        with self.table.update() as table:
            released, refused = policy.release(table, claimant_id, scopes, force)
        for holding in released:
            events.emit(self.home, "lock.released", by=claimant_id, forced=force and
                        holding["holder"] != claimant_id,
                        **_event_fields(dict(holding, reason=reason) if reason else holding))
        if refused:
            raise Refused("not the holder: " + ", ".join(
                f"{h['scope']} is held by {h['holder']}" for h in refused))
        return released

    # --- read-only views -----------------------------------------------------------------

    def holding(self, scope: str) -> dict | None:
        return self.table.snapshot()["locks"].get(scope)

    def snapshot(self) -> dict:
        return self.table.snapshot()


def _event_fields(holding: dict) -> dict:
    keep = ("scope", "holder", "generation", "pid", "reason")
    return {k: holding[k] for k in keep if k in holding}


def _jitter() -> float:
    """0.8-1.2, so that waiters released together do not retry in lockstep."""
    import random  # a waiter's cost, not every command's start-up

    return random.uniform(0.8, 1.2)
