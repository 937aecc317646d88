"""The drain loop: read with XREADGROUP BLOCK, run, record the result and ACK atomically.

A heartbeat thread (its own connection) keeps `tasks:workers` fresh, refreshes the idle time
of the in-flight entry, and reclaims the pending entries of dead workers (worker_dead) —
those come back to this worker's own pending list, which the main loop drains before
reading new entries. The lease (entries idle past LEASE_MS) is only the fallback for
consumers that never beat at all.

SIGTERM/SIGINT once: finish the current task, then exit. Twice: stop it and hand it back.
Either way the worker says so on stderr and exits 128+signal (130 for ^C, 143 for SIGTERM):
a stop by signal is reported as one. An idle worker leaves its blocking read at once (an
entry that read took meanwhile stays pending, reclaimed like a dead worker's). A SIGTERM
that comes with its parent gone (a supervisor's child gets one when the supervisor dies,
even by kill -9: proc.die_with_parent) hands the task back at once: nothing watches it now.

A task is never run again while its runner may still be alive. On this host a worker is
dead only once its process and its task's runner (the task guard, recorded in its
heartbeat) are both gone: a stopped worker (SIGSTOP, ^Z) is alive, however long it has not
beaten. Only a worker on another host, which cannot be looked at, is dead once silent past
WORKER_DEAD_AFTER. A worker that takes over a consumer name waits until the process that
last used it is gone.

Before each read the worker checks `mesh:paused` (and the daily budget) and waits while the
mesh is paused. An agent run that ends on a usage window or a spend limit is handed back
with its attempt undone and pauses the whole mesh until the limit lifts; a failed login
pauses it for a while; a plain rate limit (or an overload) only backs its own task off
before the retry (queue.limits); a task over its own budget is dead-lettered at once (a
retry would cost as much).
"""

import functools
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

from ..core import clock, proc
from ..core.errors import BadInput, MeshError, Unavailable
from .broker import Broker
from .connection import describe, unavailable
from .outcome import BUDGET, Executor, Outcome
from .limits import BACKOFF_BASE, BACKOFF_CAP, USAGE_LIMITED, backoff, pauses_mesh
from .pause import Pauses, after_run
from .tasks import ATTEMPT, DEFAULT_MAX_ATTEMPTS, from_entry, result_record, unrunnable

BEAT_EVERY = 2.0
WORKER_DEAD_AFTER = 10.0  # a worker silent this long is dead: its tasks move within ~12 s
LEASE_MS = 3_600_000
PAUSE_RECHECK = 0.25
PREDECESSOR_POLL = 0.2

# What the worker does with a finished run (decide_outcome)
FINISH, RETRY, DEAD_LETTER, HAND_BACK, OVER_BUDGET = (
    "finish", "retry", "dead_letter", "hand_back", "over_budget")


def decide_outcome(status: str, error: str | None, attempt: int, limit: int) -> str:
    """One of the five outcomes of a run: a limit that pauses the mesh (a usage window, a
    spend limit) hands the task back (not its fault, its attempt undone); success finishes
    it; a task over its own budget is dead-lettered at once (a retry would cost as much);
    any other failure, a plain rate limit included, is retried until its last attempt, then
    dead-lettered."""
    if pauses_mesh(error):
        return HAND_BACK
    if status == "ok":
        return FINISH
    if error == BUDGET:
        return OVER_BUDGET
    return DEAD_LETTER if attempt >= limit else RETRY


@dataclass
class Worker:
    broker: Broker
    beat_broker: Broker  # a second connection: the main one may sit in a BLOCK
    executor: Executor
    consumer: str
    queues: list[str]
    workdir: str
    block_ms: int = 2000
    max_tasks: int | None = None
    burst: bool = False
    default_timeout: float | None = None
    on_result: object = None  # called with each result record (queue-drain prints it)
    on_task: object = None  # called with the task id it starts, None when it waits again
    daily_budget_usd: float | None = None  # config.toml [budget] daily_usd
    revive_redis: object = None  # connection.reviver(): restarts the mesh's own Redis
    retry_backoff: tuple = (BACKOFF_BASE, BACKOFF_CAP)  # config.toml [retry] base, cap
    stopping: int = 0
    stopped_by: int = 0  # the first stop signal
    done: int = 0
    _current: tuple | None = None  # (queue, entry, task id) in flight
    _said_idle: bool = False  # a stop said "no task running": none may start after it
    _blocked: bool = False  # in the blocking read, which a stop ends (StopReading)
    _clear_until: float = 0.0  # no pause was in force when last asked: trust it until then
    _reclaimed: threading.Event = field(default_factory=threading.Event)
    _parent: int = field(default_factory=os.getppid)  # a stop once it is gone hands back
    _runner: dict | None = None  # the running task's guard: pid and start time

    @functools.cached_property
    def pauses(self) -> Pauses:
        return Pauses.of(self.broker)

    # --- lifecycle ------------------------------------------------------------------------

    def run(self) -> int:
        for queue in self.queues:  # connected already: a cut now is waited out
            self._survive(lambda queue=queue: self.broker.ensure_group(queue))
        self._install_signals()
        if not self._wait_for_predecessor():
            return 128 + self.stopped_by
        self._reclaimed.set()  # first look at our own pending list (a restart's leftovers)
        beating = threading.Thread(target=self._beat_loop, daemon=True)
        self._survive(lambda: self.beat_broker.beat(self.consumer, self._beat_record()))
        beating.start()
        self._report_task(None)  # ready: about to block on its queues
        try:
            while not self.stopping and (self.max_tasks is None or self.done < self.max_tasks):
                if not self._survive(self._step) and self.burst:
                    break
        finally:
            self.stopping = max(self.stopping, 1)
            beating.join(timeout=BEAT_EVERY + 1)
            # Gone for good only with nothing pending: else its heartbeat stays, goes
            # silent, and a live worker reclaims the entries at once, not after the lease.
            try:
                self.broker.forget_worker(self.consumer, self.queues)
            except Exception as e:  # noqa: BLE001 - sorted by unavailable()
                if not unavailable(e):
                    raise  # else its beat goes stale: the record is dropped as dead
        return 128 + self.stopped_by if self.stopped_by else 0

    def _install_signals(self) -> None:
        def stop(signum, _frame):
            """Set state and say so; the notice goes straight to fd 2, since the signal may
            land while the main thread is inside sys.stderr (a "reentrant call" there)."""
            orphaned = os.getppid() != self._parent
            self.stopping = max(self.stopping + 1, 2 if orphaned else 1)
            self.stopped_by = self.stopped_by or signum
            current = self._current
            self._said_idle = self._said_idle or current is None
            notice = stop_notice(signum, self.stopping, current and current[2], orphaned)
            try:
                os.write(2, f"queue-drain: {notice}\n".encode(errors="replace"))
            except OSError:  # stderr closed or full: the stop goes ahead all the same
                pass
            if self.stopping >= 2:
                self.executor.interrupt()
            if self._blocked:  # idle: do not wait out the BLOCK
                self._blocked = False
                raise StopReading

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)

    def _wait_for_predecessor(self) -> bool:
        """Before anything runs under this consumer name: wait while the last process that
        used it (its heartbeat record) may still run a task of its pending list (a
        supervisor respawned beside its orphaned worker, a stopped one). False when a stop
        came first."""
        said = False
        while not self.stopping:
            record = self._survive(lambda: self.broker.workers().get(self.consumer))
            if record is None or worker_dead(record, time.time()):
                return True
            if not said:
                said = True
                print(f"queue-drain: consumer {self.consumer} is still in use by pid "
                      f"{record.get('pid')} on {record.get('host')}; waiting for it to end",
                      file=sys.stderr, flush=True)
            time.sleep(PREDECESSOR_POLL)
        return False

    def _survive(self, operation):
        """Run operation, waiting out a Redis that is down, restarting, or refusing writes
        (MISCONF: a full disk): a result already computed is recorded once Redis is back,
        never dropped. An entry read just before the connection broke stays on this
        consumer's pending list, so the next step looks there first."""
        pause = 0.05
        while True:
            try:
                return operation()
            except Exception as e:  # noqa: BLE001 - sorted by unavailable()
                if not unavailable(e):
                    raise
                self._reclaimed.set()
                if self.stopping >= 2 or (self.stopping and operation == self._step):
                    # Asked to stop, and no result waits to be recorded (an entry just read
                    # stays pending, for whoever comes next): do not wait for Redis.
                    raise Unavailable(f"redis unavailable ({describe(e)}); stopped") from None
                self._revive(e, first=pause == 0.05)
                time.sleep(pause)
                pause = min(2.0, pause * 2)

    def _revive(self, error: Exception, first: bool) -> None:
        """Say once why Redis is unavailable; start the mesh's own Redis again if it died."""
        if first:
            print(f"queue-drain: redis unavailable ({describe(error)}); retrying",
                  file=sys.stderr, flush=True)
        if self.revive_redis is None:
            return
        try:
            if self.revive_redis():
                print("queue-drain: restarted the mesh's redis", file=sys.stderr, flush=True)
        except (MeshError, OSError) as e:
            if first:
                print(f"queue-drain: cannot restart the mesh's redis: {e}", file=sys.stderr,
                      flush=True)

    # --- one step -------------------------------------------------------------------------

    def _step(self) -> bool:
        """Handle one entry if there is one; False when there was nothing to do."""
        if not self._may_start():
            return True  # waited out (part of) a pause: look again
        got = None
        if self._reclaimed.is_set():
            self._reclaimed.clear()
            got = self.broker.read(self.broker.redis, self.consumer, self.queues, True, 0)
            if got:
                self._reclaimed.set()  # maybe more: look again next step
            if got and not self.broker.touch(got[0], self.consumer, got[1]):
                return True  # taken over meanwhile (a reclaimer that thought us dead)
        if got is None:
            got = self._blocking_read()
        if got is None:
            return False
        queue, entry, fields = got
        if not fields:
            self.broker.ack_empty(queue, entry)
            return True
        try:
            task = from_entry(fields, entry)
        except BadInput as e:
            self._reject(queue, entry, unrunnable(fields, entry), str(e))
            return True
        self._handle(queue, entry, task)
        return True

    def _blocking_read(self):
        """Wait up to block_ms for a new entry; a stop signal ends the wait at once (None).
        redis-py drops a connection whose reply an exception cut short; an entry read just
        before the stop stays pending, for whoever comes next."""
        try:
            try:
                self._blocked = not self.stopping
                if not self._blocked:
                    return None
                return self.broker.read(self.broker.redis, self.consumer, self.queues, False,
                                        self.block_ms)
            finally:
                self._blocked = False
        except StopReading:  # wherever it landed before the flag went down
            return None

    def _reject(self, queue: str, entry: str, task: dict, reason: str, attempt: int = 0) -> None:
        """Dead-letter an entry no worker can run (status `invalid`), and go on: a bad
        entry never stops a worker, which would only read it again on its restart."""
        print(f"queue-drain: {reason}; dead-lettered", file=sys.stderr, flush=True)
        result = self._result(task, queue, Outcome("invalid", None, reason, 0.0), attempt)
        self._survive(lambda: self.broker.dead_letter(queue, entry, task, result, reason))
        self.done += 1
        if self.on_result:
            self.on_result(result)

    def _hand_back(self, queue: str, entry: str, task: dict, reason: str) -> None:
        """Requeue a task that did not fail through its own fault, its attempt not counted."""
        self._survive(lambda: self.broker.requeue(queue, entry, task, reason,
                                                  undo_attempt=True))

    def _handle(self, queue: str, entry: str, task: dict) -> None:
        attempt = self.broker.start_attempt(task["id"])
        limit = task.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
        if attempt > limit:  # it keeps killing or losing its workers
            outcome = Outcome("failed", None, "", 0.0)
            self.broker.dead_letter(queue, entry, task, self._result(task, queue, outcome, attempt),
                                    f"delivered {attempt} times, max_attempts is {limit}")
            return
        self._current = (queue, entry, task["id"])  # a stop from here finishes it
        if self._said_idle:  # the stop came between the read and here: keep its word
            self._current = None
            self._hand_back(queue, entry, task, "handed_back")
            return
        self._report_task(task["id"])
        try:
            outcome = self.executor.run(dict(task, **{ATTEMPT: attempt}), self.workdir,
                                        task.get("timeout") or self.default_timeout,
                                        self._runner_started)
        except Unavailable:  # the agent CLI vanished: not the task's fault; give it back
            self._hand_back(queue, entry, task, "handed_back")
            raise
        except BadInput as e:  # the task itself cannot run here: another try would not help
            self._reject(queue, entry, task, str(e), attempt)
            return
        finally:
            self._current = self._runner = None  # the run has ended: its guard is reaped
            self._report_task(None)
        if self.stopping >= 2:  # interrupted on purpose: not the task's fault
            self._hand_back(queue, entry, task, "handed_back")
            return
        details = outcome.details or {}
        result = self._result(task, queue, outcome, attempt)
        # Pauses first, so that no worker starts another task before they are seen.
        if after_run(self.pauses, details, self.daily_budget_usd, self.consumer,
                     guard=self._survive, task=task["id"]):
            self._clear_until = 0.0  # this worker paused the mesh: its next look sees it
        verdict = decide_outcome(outcome.status, details.get("error"), attempt, limit)
        if verdict == HAND_BACK:
            self._hand_back(queue, entry, task, USAGE_LIMITED)
            result["handed_back"] = True
        elif verdict == FINISH:
            self._survive(lambda: self.broker.finish(queue, entry, task, result))
        elif verdict == OVER_BUDGET:
            self._survive(lambda: self.broker.dead_letter(
                queue, entry, task, result, f"over its budget (error_max_budget_usd, spent "
                                            f"${details.get('cost_usd') or 0:g})"))
        elif verdict == DEAD_LETTER:
            self._survive(lambda: self.broker.dead_letter(
                queue, entry, task, result, f"{outcome.status} on attempt {attempt} of {limit}"))
        else:
            result["retry"] = True
            delay = backoff(details.get("error"), attempt, *self.retry_backoff)
            if delay:
                result["backoff"] = delay
                self._back_off(delay)
            self._survive(lambda: self.broker.requeue(queue, entry, task, "retry",
                                                      undo_attempt=False))
        self.done += 1
        if self.on_result:
            self.on_result(result)

    def _back_off(self, delay: float) -> None:
        """Wait before a retry, the entry still pending here (a worker killed meanwhile has
        it reclaimed); a stop ends the wait and the task is requeued at once."""
        end = time.monotonic() + delay
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    def _runner_started(self, pid: int) -> None:
        """Record the task's guard in the heartbeat at once: until it is gone, the task
        is not run again, even once this worker is gone."""
        self._runner = {"pid": pid, "pid_start": proc.start_time(pid)}
        try:
            self.broker.beat(self.consumer, self._beat_record())
        except Exception as e:  # noqa: BLE001 - the beat thread writes it again
            if not unavailable(e):
                raise

    def _report_task(self, task_id: str | None) -> None:
        """Tell on_task; the registry is best-effort here (an unregistered session is simply
        not watched), never a reason to fail a task."""
        if self.on_task is None:
            return
        try:
            self.on_task(task_id)
        except Exception:  # noqa: BLE001
            pass

    def _result(self, task: dict, queue: str, outcome: Outcome, attempt: int) -> dict:
        return result_record(task, outcome, queue=queue, worker=self.consumer, attempt=attempt)

    # --- pausing --------------------------------------------------------------------------

    def _may_start(self) -> bool:
        """True when a task may start. While the mesh is paused (or today's budget is
        spent), wait in short steps, responsive to SIGTERM, and return False. A clear answer
        holds for PAUSE_RECHECK seconds: a busy worker saves a round trip per task and still
        sees a new pause within that time."""
        if time.monotonic() < self._clear_until:
            return True
        pause = self.pauses.in_force(self.daily_budget_usd, self.consumer)
        if pause is None:
            self._clear_until = time.monotonic() + PAUSE_RECHECK
            return True
        self._wait_out(pause)
        return False

    def _wait_out(self, pause: dict) -> None:
        """Sleep until the pause ends (it may be extended or lifted meanwhile), or a signal."""
        look_again = time.monotonic() + 1.0
        while not self.stopping:
            until = pause.get("until")
            left = (until - time.time()) if isinstance(until, (int, float)) else 1.0
            if left <= 0 or time.monotonic() >= look_again:
                current = self.pauses.paused()
                if current is None:
                    self.pauses.resumed(pause, by=self.consumer)
                    return
                pause, look_again = current, time.monotonic() + 1.0
            time.sleep(min(0.1, left) if left > 0.01 else 0.02)

    # --- the heartbeat thread -------------------------------------------------------------

    def _beat_record(self) -> dict:
        return {**proc.identity(), "queues": self.queues, "started": clock.iso(),
                "task": self._current[1] if self._current else None, "runner": self._runner}

    def _beat_loop(self) -> None:
        while self.stopping == 0 or self._current is not None:
            try:
                self.beat_broker.beat(self.consumer, self._beat_record())
                current = self._current
                if current:
                    self.beat_broker.touch(current[0], self.consumer, current[1])
                self._reclaim()
            except Exception as e:  # noqa: BLE001 - Redis restarting: try again next beat
                if unavailable(e):
                    self._revive(e, first=False)  # a worker busy with a long task heals it
            for _ in range(int(BEAT_EVERY * 10)):
                if self.stopping and self._current is None:
                    return
                time.sleep(0.1)

    def _reclaim(self) -> None:
        """Take over dead workers' pending entries (and, as a fallback, entries idle past
        the lease of consumers with no heartbeat); the main loop finds them on its own
        pending list."""
        workers = self.beat_broker.workers()
        for name, record in workers.items():
            if name != self.consumer and worker_dead(record, time.time()):
                for queue in self.queues:
                    if self.beat_broker.claim_from(queue, name, self.consumer):
                        self._reclaimed.set()
                self.beat_broker.forget_worker(name, record.get("queues") or self.queues)
        beating = {name for name, record in workers.items()
                   if not worker_dead(record, time.time())}
        for queue in self.queues:  # never from a worker that may still run it
            if self.beat_broker.claim_idle(queue, self.consumer, LEASE_MS,
                                           spare=beating.__contains__):
                self._reclaimed.set()


class StopReading(BaseException):
    """Raised by the stop handler into an idle worker's blocking read (BaseException: no
    `except Exception` on the way may take it for a Redis error)."""


def stop_notice(signum: int, count: int, task_id: str | None, orphaned: bool = False) -> str:
    """What a stop signal does, said at once: the first one is otherwise silent for as long
    as the task runs."""
    why = "parent gone: " if orphaned else ""
    if task_id is None:
        return f"{why}no task running, stopping"
    if count >= 2:
        return f"{why}stopping task {task_id} and handing it back"
    again = "^C" if signum == signal.SIGINT else "SIGTERM"
    return f"finishing task {task_id}, {again} again to hand it back"


def worker_dead(record: dict, now: float) -> bool:
    """Whether a worker (its heartbeat record) is provably gone, so that its tasks may run
    elsewhere. On this host: its process and its task's runner have both ended (a stopped
    or hung one is alive, a zombie is not). On another host, which cannot be looked at:
    silent past WORKER_DEAD_AFTER."""
    processes = [record, *([record["runner"]] if record.get("runner") else [])]
    alive = [proc.is_alive(p.get("pid"), p.get("pid_start"), record.get("host"))
             for p in processes]
    if True in alive:
        return False
    if None in alive:
        return now - record.get("beat", 0) > WORKER_DEAD_AFTER
    return True
