"""meshctl dash: the terminal loop around the pure parts. It reads keys, hands them to
view.handle, draws render.render's lines and writes only render.frame_diff's escapes.

- The collector gathers in its threads; a frame only assembles what it has (no I/O), so
  the first frame comes at once with "…" where a source has given nothing yet. It starts
  once the terminal is set up: its threads would only slow blessed's import (the GIL).
- Idle, a frame a second; while keys arrive, an action runs or a source is still
  loading, ten a second. A full
  repaint every REPAINT_EVERY seconds repairs anything that drifted, and after a resize
  (SIGWINCH sets a flag; the size is read again on every pass anyway).
- NO_COLOR: blessed would drop every capability (cursor movement, full screen) under it,
  so the Terminal is built without it and the monochrome theme draws (bold, reverse).
- blessed's start-up query waits BLESSED_QUERY_TIMEOUT_SECONDS for a terminal that does
  not answer (5 s by default): QUERY_TIMEOUT bounds it unless the user set it.
- `:` actions run in a worker thread; their outcome is the message line.
- q, ^C, SIGTERM and an exception all leave through blessed's context managers, which
  restore the screen, the cursor and the tty modes.
"""

import os
import queue
import signal
import sys
import threading
import time
from dataclasses import replace

from ..core import clock
from ..core.errors import UsageError

IDLE, BUSY = 1.0, 0.1  # seconds a frame waits for a key: idle, and while keys arrive
BUSY_FOR = 3.0  # seconds after a key that frames stay fast
REPAINT_EVERY = 10.0
ESC_DELAY = 0.05  # seconds: Esc alone vs the start of a sequence (blessed's default 0.35)
QUERY_TIMEOUT = "0.2"
REFUSAL = "meshctl dash needs a terminal ({why}); mesh-top prints the same snapshot"


def refusal(environ, stdout_tty: bool, as_json: bool = False) -> str | None:
    """Why the dash cannot run here (None: it can): a pipe, --json, or TERM=dumb/unset."""
    if not stdout_tty:
        why = "stdout is not a terminal"
    elif as_json:
        why = "--json asks for records"
    elif environ.get("TERM", "dumb") in ("", "dumb"):
        why = "TERM is dumb or unset"
    else:
        return None
    return REFUSAL.format(why=why)


def terminal():
    """A blessed Terminal with full capabilities even under NO_COLOR."""
    os.environ.setdefault("BLESSED_QUERY_TIMEOUT_SECONDS", QUERY_TIMEOUT)
    import blessed

    saved = os.environ.pop("NO_COLOR", None)
    try:
        return blessed.Terminal()
    finally:
        if saved is not None:
            os.environ["NO_COLOR"] = saved


def run(home, redis_url: str | None = None, namespace: str | None = None,
        as_json: bool = False) -> None:
    """The dash until q (UsageError, 64, where there is no terminal for it)."""
    why = refusal(os.environ, sys.stdout.isatty(), as_json)
    if why:
        raise UsageError(why)
    from . import snapshot
    from .collector import Collector

    link = snapshot.Link(home, redis_url, namespace)
    sources, detail = snapshot.sources(home, link)
    collector = Collector(sources)
    try:
        Loop(home, collector, detail, link).run(terminal())
    finally:
        collector.stop(0)


class Loop:
    def __init__(self, home, collector, detail, link):
        from ..core import roles
        from . import commands, view

        self.home, self.collector, self.detail, self.link = home, collector, detail, link
        self.mesh = os.path.basename(home.repository().root)
        self.roles = list(roles.load(home))
        self.view = view.View(history=commands.load_history(home))
        self.no_color = bool(os.environ.get("NO_COLOR"))
        self.messages: queue.Queue = queue.Queue()
        self.running = 0  # actions in flight
        self.resized = threading.Event()

    def snapshot(self) -> dict:
        from .snapshot import assemble

        return assemble(self.collector.snapshot(), clock.iso(), self.mesh, self.roles)

    def run(self, term) -> None:
        from ..core.errors import exit_on_sigterm
        from . import render, theme

        exit_on_sigterm()
        signal.signal(signal.SIGWINCH, lambda *_: self.resized.set())
        out = sys.stdout
        old, size, repainted, last_key, shown = None, None, 0.0, -BUSY_FOR, None
        with term.fullscreen(), term.cbreak(), term.hidden_cursor():
            self.collector.start()
            while True:
                now = time.monotonic()
                self._take_messages()
                if self.resized.is_set() or (term.width, term.height) != size \
                        or now - repainted >= REPAINT_EVERY:
                    self.resized.clear()
                    size, old, repainted = (term.width, term.height), None, now
                if shown is None or not self.view.paused:  # paused: the frozen snapshot
                    shown = self.snapshot()
                self.detail.selected = self.view.selected if self.view.mode == "detail" else None
                lines = render.render(shown, self.view, *size,
                                      theme.theme(self.view.theme, self.no_color))
                frame = render.frame_diff(old, lines)
                if frame:
                    out.write(frame)
                    out.flush()
                old = lines
                fast = (self.running or now - last_key < BUSY_FOR
                        or any(render.loading(shown, name) for name in shown["sources"]))
                key = term.inkey(timeout=BUSY if fast else IDLE, esc_delay=ESC_DELAY)
                if not key:
                    continue
                last_key = time.monotonic()
                if self._key(key, shown) == "quit":
                    return

    def _key(self, key, shown) -> str | None:
        from . import commands, keys
        from .view import handle

        history = self.view.history
        self.view, action = handle(self.view, keys.key_of(key), shown)
        if self.view.history != history:
            commands.save_history(self.home, self.view.history)
        if action is None:
            return None
        if action["cmd"] == "quit":
            return "quit"
        self.running += 1
        threading.Thread(target=self._act, args=(action,), daemon=True,
                         name=f"dash-{action['cmd']}").start()
        return None

    def _act(self, action: dict) -> None:
        """One action, off the UI thread; whatever happens is one message line."""
        from . import actions
        from .collector import describe

        try:
            message = actions.run(action, self.home, self.link)
        except Exception as e:  # noqa: BLE001 - the dash keeps running whatever breaks
            message = f"{action['cmd']}: {describe(e)}"
        self.messages.put(message)

    def _take_messages(self) -> None:
        while True:
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                return
            self.running -= 1
            self.view = replace(self.view, message=message)
