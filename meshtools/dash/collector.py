"""The dash's collector: each source runs on its own cadence in its own background thread,
and `snapshot()` returns at once what each last gave, however slow or hung a source is.

A source's thread never overlaps itself: the next read starts `every` seconds after the
previous one started, or as soon as it ends if it took longer. A read that has run past the
source's `timeout` cannot be stopped (a Python thread cannot be killed), but the snapshot
says so in the source's `error` while its last data ages; the late answer, when it comes,
is taken. Each source's record in the snapshot:

    {"data": <what it last returned, None before its first>, "age": <seconds since then,
     None before>, "error": <None or one line: its last failure or a timeout>}
"""

import threading
import time
from typing import Callable, NamedTuple


class Source(NamedTuple):
    name: str
    read: Callable[[], object]
    every: float  # seconds between the starts of two reads
    timeout: float  # a read running longer is reported as an error


def describe(error: BaseException) -> str:
    """A source's failure as one line, secrets masked (a MeshError's message is written
    for people; anything else is named by its type)."""
    from ..core.errors import MeshError
    from ..core.redact import redact_text
    from ..landing.gitops import first_line

    text = redact_text(first_line(str(error))[:200])
    if isinstance(error, MeshError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def record(state: dict, now: float, timeout: float) -> dict:
    """The snapshot record of one source's state {data, at, error, since} (at: when data
    came; since: when the read now running began, or None); pure."""
    error = state["error"]
    since = state["since"]
    if since is not None and now - since > timeout:
        error = f"no answer for {now - since:.0f}s (timeout {timeout:g}s)"
    age = None if state["at"] is None else round(max(0.0, now - state["at"]), 3)
    return {"data": state["data"], "age": age, "error": error}


class Collector:
    """Runs sources in daemon threads from start() until stop()."""

    def __init__(self, sources: list[Source], clock=time.monotonic):
        self.sources = {source.name: source for source in sources}
        self.clock = clock
        self._lock = threading.Lock()
        self._state = {name: {"data": None, "at": None, "error": None, "since": None}
                       for name in self.sources}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "Collector":
        for source in self.sources.values():
            thread = threading.Thread(target=self._run, args=(source,), daemon=True,
                                      name=f"dash-{source.name}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, wait: float = 1.0) -> None:
        """Ask every thread to end; a hung read is left behind (its thread is a daemon)."""
        self._stop.set()
        deadline = self.clock() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - self.clock()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def snapshot(self) -> dict[str, dict]:
        """{source name: {data, age, error}} now, without waiting for any source."""
        now = self.clock()
        with self._lock:
            return {name: record(self._state[name], now, self.sources[name].timeout)
                    for name in self.sources}

    def settled(self, wait: float, poll: float = 0.005) -> dict[str, dict]:
        """snapshot() once every source has answered (data or an error) or run past its
        timeout, or after `wait` seconds: what a one-shot reader (mesh-top) prints."""
        deadline = self.clock() + wait
        while True:
            found = self.snapshot()
            if self.clock() >= deadline or all(r["age"] is not None or r["error"] is not None
                                               for r in found.values()):
                return found
            self._stop.wait(poll)

    def _run(self, source: Source) -> None:
        state = self._state[source.name]
        while not self._stop.is_set():
            started = self.clock()
            with self._lock:
                state["since"] = started
            try:
                data, error = source.read(), None
            except Exception as e:  # a source's failure is its panel's, never the dash's
                data, error = None, describe(e)
            with self._lock:
                state["since"] = None
                state["error"] = error
                if error is None:
                    state["data"], state["at"] = data, self.clock()
            self._stop.wait(max(0.0, started + source.every - self.clock()))


# seconds (every, timeout) of each of the mesh's sources: fast where the dash animates
CADENCE = {"procs": (2.0, 5.0), "git": (10.0, 30.0), "gpus": (1.0, 5.0),
           "services": (5.0, 10.0), "offload": (30.0, 10.0)}


def mesh_sources(home, repo: str | None = None) -> list[Source]:
    """The sources of this package wired to a mesh (the mesh's Redis is health's, in
    dash.snapshot). The [[dash.*]] tables are read now, so a bad one is a ConfigError (78)
    before a frame is drawn."""
    from ..coord import registry
    from ..core import config
    from . import sources
    from .sources import gitstate, gpu, offload, procs, services

    settings = config.of(home)
    checks = services.services_of(settings)
    endpoints = offload.endpoints_of(settings)
    repo = repo or home.repository().root
    sampler, verdicts = procs.Sampler(), {}
    reads = {"procs": lambda: sampler(registry.all_sessions(home)),
             "git": lambda: gitstate.roles_state(home, repo, verdicts),
             "gpus": gpu.Gpus(),
             "services": lambda: sources.parallel(services.check, checks),
             "offload": lambda: sources.parallel(offload.probe, endpoints)}
    return [Source(name, read, *CADENCE[name]) for name, read in reads.items()]
