"""Signals for a loop that must never act halfway through a step: a handler only queues the
signal and wakes the loop through a pipe (the self-pipe trick); the loop takes the queue
when it is ready. SIGCHLD only wakes it, so that a child's exit is seen at once."""

import os
import select
import signal

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # asked of the supervisor, passed on


class Signals:
    """The FORWARDED signals queued, SIGCHLD as a wake-up, for as long as installed."""

    def __init__(self):
        self.pending: list[int] = []
        self._wake_r = self._wake_w = None
        self._saved: dict = {}

    def install(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        for signum in (*FORWARDED, signal.SIGCHLD):
            self._saved[signum] = signal.signal(signum, self._on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # held over the handoff

    def _on_signal(self, signum, _frame) -> None:
        if signum != signal.SIGCHLD:
            self.pending.append(signum)
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass

    def pause(self, seconds: float) -> None:
        """Sleep up to `seconds`; a signal ends it (one queued already: no sleep at all)."""
        if self.pending:
            return
        ready, _, _ = select.select([self._wake_r], [], [], max(0.0, seconds))
        if ready:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass

    def uninstall(self) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._wake_r = self._wake_w = None
