"""mesh-top's side of the snapshot, pure: the dash's snapshot as JSON line records (one per
peer, queue, service, endpoint, GPU, problem, ..., each with ts and kind) grouped by panel,
and as compact lines for a terminal of a given width (`meshctl status`'s lines for Redis,
the queues and the problems; the dash's peer table, chips and GPU lines)."""

import textwrap

from . import peers
from .text import cut
from .theme import Theme

# panel: the record kinds it holds (health.records' kinds, and the dash's)
PANELS = {"redis": ("redis",), "peers": ("session",),
          "queues": ("queue", "dead", "pause", "budget"), "services": ("service",),
          "offload": ("offload",), "gpus": ("gpu",), "problems": ("problem",),
          "events": ("event",)}
DEFAULT = tuple(p for p in PANELS if p != "events")  # events only when asked for
PLAIN = Theme("plain")  # the dash's line makers without styles


def records(snapshot: dict, panels=DEFAULT) -> list[dict]:
    """The records of these panels, in panel order. A source that failed or gave nothing
    yet is still a record where health has one (redis down); the GPU panel without a GPU
    is one record saying why."""
    from ..mesh import health

    ts = snapshot["ts"]
    base = health.records({**_health(snapshot), "peers": peers.rows(snapshot)})
    absent = ((snapshot.get("sources") or {}).get("gpus") or {}).get("absent")
    dash = ([{"ts": ts, "kind": "service", **s} for s in snapshot.get("services") or []]
            + [{"ts": ts, "kind": "offload", **s} for s in snapshot.get("offload") or []]
            + ([{"ts": ts, "kind": "gpu", **g} for g in snapshot.get("gpus") or []]
               or [{"ts": ts, "kind": "gpu", "absent": absent or "no GPU"}])
            + [{**e, "kind": "event"} for e in snapshot.get("events") or []])
    found = base + dash
    return [r for panel in panels for r in found if r.get("kind") in PANELS[panel]]


def _health(snapshot: dict) -> dict:
    """The snapshot as health's functions take it: a redis record even before (or
    without) one, problems a list."""
    error = ((snapshot.get("sources") or {}).get("health") or {}).get("error")
    return {**snapshot, "redis": snapshot.get("redis") or {"up": None, "error": error},
            "problems": snapshot.get("problems") or []}


def lines(snapshot: dict, panels=DEFAULT, columns: int = 80) -> list[str]:
    """mesh-top on a terminal: each panel compact, no line wider than `columns` (a
    problem wraps, anything else is cut with …)."""
    shown = _health(snapshot)
    out = []
    for panel in panels:
        out += _LINES[panel](shown, columns)
    return [cut(line.rstrip(), columns) for line in out]


def _redis(snapshot, columns) -> list[str]:
    from ..mesh import health

    return [health.redis_line(snapshot["redis"])]


def _peers(snapshot, columns) -> list[str]:
    shown = peers.visible(snapshot)
    if not shown:
        return ["peers     none"]
    cells = peers.fitting(columns)
    pad = " " * peers.MARK
    return ["peers", pad + peers.header(cells)] + [
        pad + " ".join(t for _, t in peers.texts(row, cells)) for row in shown]


def _queues(snapshot, columns) -> list[str]:
    from ..mesh import health

    return health.queue_lines(snapshot)


def _checks(label: str, models: bool = False):
    def draw(snapshot, columns) -> list[str]:
        from . import render

        found = [render.check_chip(PLAIN, c, models) for c in snapshot.get(label) or []]
        return [render.chips(label, found or ["none configured"], columns, PLAIN)]
    return draw


def _gpus(snapshot, columns) -> list[str]:
    from . import render

    return render.gpu_lines(snapshot, None, columns, max(len(snapshot.get("gpus") or []), 1),
                            PLAIN)


def _problems(snapshot, columns) -> list[str]:
    from ..mesh import health

    return [wrapped for line in health.problem_lines(snapshot["problems"])
            for wrapped in textwrap.wrap(line, columns, subsequent_indent="  ")]


def _events(snapshot, columns) -> list[str]:
    from . import render

    return ([render.event_line(e, columns, PLAIN) for e in snapshot.get("events") or []]
            or ["events    none"])


_LINES = {"redis": _redis, "peers": _peers, "queues": _queues,
          "services": _checks("services"), "offload": _checks("offload", models=True),
          "gpus": _gpus, "problems": _problems, "events": _events}
