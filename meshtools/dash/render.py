"""Snapshot + view -> screen lines, and the escape string that turns one frame into the
next. Pure: no terminal, no clock, no I/O; the dash's loop only writes what comes out.

Every line is exactly `width` columns (wide characters and escapes measured), panels have
fixed heights (a function of the screen size and the GPU count, never of the data, so
nothing jitters), and a screen too small for the least layout gets one line that says the
size it needs.

The snapshot is the shared shape (common to `meshctl status`, the dash and mesh-top):
redis, peers, queues, dead, pause, budget, problems; and for the dash: procs, git, gpus,
services, offload, events, roles (the mesh's role names), mesh (its name), ts, as
dash.snapshot.assemble makes it (the one adapter from the collector). Each source's
{age, error} is in snapshot["sources"][name] (redis carries its own too); a source that has
given nothing yet (age and error None) shows "…", and so do problems while None. The
detail of the selected peer:

    detail = {"peer": ID, "age": s, "error": None | str,
              "events": [event records, oldest first],
              "inbox": [{"ts", "from", "body"}, ...],
              "locks": {"held": [scope, ...], "waiting": [scope, ...]},
              "trace": [str | event record, ...],  # the current task's, oldest first
              "trace_task": ID | None,  # whose trace it is
              "trace_last": bool,       # waiting: the trace of the task it ran last
              "log": [str, ...]}                    # the log's tail
    gpus = [{"index", "name", "util_history": [%...], "mem_history": [%...], "mem_used",
             "mem_total"}]                       # sources.gpu; sources.gpus.absent: why none
    services / offload = [{"name", "ok", "latency_ms", "models" (offload), "detail"}]
"""

from . import keys, peers
from .spark import sparkline
from .commands import Known, suggestion
from .view import visible
from .text import ago, clean, clip, fit, size, width

MIN_WIDTH, MIN_HEIGHT = 60, 12
ORDER = ("header", "services", "queues", "peers", "gpus", "feed", "status")  # top to bottom
# A short screen drops panels in this order until the peer table has MIN_PEER_ROWS rows.
DROP_PANELS = ("gpus", "services", "queues", "feed")
MIN_PEER_ROWS = 3
MAX_GPU_ROWS = 4
STALE_AFTER = 5.0  # seconds: older data shows its age
LOADING = "…"
RULE = "─"
STATE_STYLES = {"alive": "ok", "stale": "warn", "stuck": "warn", "dead": "bad",
                "FATAL": "bad", "paused": "dim"}
FORECAST_STYLES = {"clean": "ok", "conflict": "bad"}
_BAD_WORDS = ("fail", "fatal", "deadlock", "conflict", "dead", "error", "given_up", "blocked")
_OK_ENDS = ("done", "landed", "granted", "registered", "respawned", "synced")
_WARN_WORDS = ("waiting", "pause", "usage_limited", "rate_limited", "budget", "stuck",
               "takeover", "reclaim")
_FAMILIES = {"lock": "info", "task": "accent", "queue": "accent", "agent": "accent",
             "pick": "accent", "anchor": "accent", "session": "dim", "message": "info"}
_SUBJECTS = ("peer", "session", "task", "id", "worker", "to", "role")
_QUIET = frozenset({"ts", "event", "host"})


def render(snapshot: dict, view, width: int, height: int, theme) -> list[str]:
    """The whole screen for the view's mode: `height` lines of exactly `width` columns."""
    heights = layout(width, height, snapshot)
    if heights is None:
        need = f"terminal too small: need {MIN_WIDTH}x{MIN_HEIGHT}, have {width}x{height}"
        return [clip(theme.paint("bad", fit(need, width)), width)] + [" " * width] * (height - 1)
    if view.mode == "help":
        body = _help(width, height - 3, theme)
    elif view.mode == "detail" or (view.mode == "command" and view.back == "detail"):
        body = _detail(snapshot, view, width, height - 3, theme)
    else:
        body = []
        for panel in ORDER[1:-1]:
            if heights.get(panel):
                body += _PANELS[panel](snapshot, view, width, heights[panel], theme)
    lines = _header(snapshot, view, width, theme) + body + [_status(snapshot, view, width, theme)]
    return [clip(line, width) for line in lines[:height]] + [" " * width] * (height - len(lines))


def layout(width: int, height: int, snapshot: dict) -> dict | None:
    """Panel heights for the main screen (0: dropped), or None when even the least layout
    does not fit."""
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        return None
    gpus = len(_items(snapshot, "gpus"))
    want = {"header": 2, "services": 2, "queues": 2, "gpus": max(1, min(gpus, MAX_GPU_ROWS)),
            "feed": 1 + min(max(height // 4, 3), 12), "status": 1}
    for panel in (None, *DROP_PANELS):
        if panel:
            want[panel] = 0
        if height - sum(want.values()) >= 2 + MIN_PEER_ROWS:
            return {**want, "peers": height - sum(want.values())}
    return None


def _items(snapshot: dict, name: str) -> list:
    value = snapshot.get(name)
    return value if isinstance(value, list) else []


def _meta(snapshot: dict, name: str) -> tuple:
    """(age, error) of a source: in its own record, else in snapshot['sources']."""
    value = snapshot.get(name)
    if not isinstance(value, dict) or ("age" not in value and "error" not in value):
        value = (snapshot.get("sources") or {}).get(name) or {}
    return value.get("age"), value.get("error")


def loading(snapshot: dict, name: str) -> bool:
    """True while a source has given nothing yet."""
    meta = (snapshot.get("sources") or {}).get(name)
    return bool(meta) and meta.get("age") is None and meta.get("error") is None


def _old(age) -> str:
    return f" ({ago(age)} old)" if age is not None and age >= STALE_AFTER else ""


def _rule(title: str, columns: int, theme) -> str:
    head = f"{RULE} {title} "
    return theme.paint("title", fit(head + RULE * max(columns - width(head), 0), columns))


# -- panels ------------------------------------------------------------------------------

def _header(snapshot, view, columns, theme) -> list[str]:
    mesh = snapshot.get("mesh")
    name = (mesh.get("name") if isinstance(mesh, dict) else mesh) or "mesh"
    rows = peers.rows(snapshot)
    alive = sum(1 for r in rows if r.get("state") == "alive")
    clock = str(snapshot.get("ts") or "")[11:19]
    count = (f"{len(rows)} peers, {alive} alive" if snapshot.get("peers") is not None
             else f"peers {LOADING}")
    left = f" meshtools · {clean(name)}{f' · {clock} UTC' if clock else ''} · {count}"
    right = "DISPLAY PAUSED " if view.paused else ""
    return [theme.paint("title", fit(left, columns - width(right))) + theme.paint("warn", right),
            _problems(snapshot, columns, theme)]


def _problems(snapshot, columns, theme) -> str:
    problems = snapshot.get("problems")
    if problems is None:
        return theme.paint("dim", fit(f" {LOADING}", columns))
    if not problems:
        return theme.paint("ok", fit(" ✔ nothing needs you", columns))
    texts = [clean(p.get("text") or f"{p.get('subject')} {p.get('kind')}") for p in problems]
    return theme.paint("bad", fit(f" ⚠ {len(problems)} need you: " + " · ".join(texts), columns))


def _services(snapshot, view, columns, rows, theme) -> list[str]:
    redis = snapshot.get("redis") or {}
    age, error = _meta(snapshot, "redis")
    if not redis:
        found = [f"redis {LOADING}"]
    elif redis.get("up"):
        persistence = redis.get("persistence") or {}
        kept = "+".join(k for k in ("aof", "rdb") if persistence.get(k)) or "no persistence"
        found = [_chip(theme, "redis", True,
                       f"{redis.get('rtt_ms') or 0:.1f}ms {size(redis.get('used_memory'))} {kept}"
                       + _old(age))]
    else:
        found = [_chip(theme, "redis", False, error or "down")]
    found += [check_chip(theme, s) for s in _items(snapshot, "services")]
    offload = [check_chip(theme, s, models=True) for s in _items(snapshot, "offload")]
    lines = [chips("services", found, columns, theme),
             chips("offload", offload or [theme.paint("dim", "none configured")], columns,
                   theme)]
    return lines[:rows]


def check_chip(theme, check, models=False) -> str:
    """A service or offload check as a chip: its name, ✔ and latency (and models), or ✗
    and why."""
    if not check.get("ok"):
        return _chip(theme, check.get("name"), False, check.get("detail") or "unreachable")
    extra = f"{check['latency_ms']:.0f}ms" if check.get("latency_ms") is not None else ""
    if models and check.get("models") is not None:
        extra += f" {check['models']} models"
    return _chip(theme, check.get("name"), True, extra)


def _chip(theme, name, ok, text) -> str:
    mark = theme.paint("ok", "✔") if ok else theme.paint("bad", "✗")
    return f"{clean(name)} {mark} {clean(text).strip()}".rstrip()


def chips(label, found, columns, theme) -> str:
    """A labelled line of chips (services, offload), cut or padded to columns."""
    return clip(theme.paint("header", fit(label, 9)) + " " + "  ·  ".join(found), columns)


def _queues(snapshot, view, columns, rows, theme) -> list[str]:
    queues = _items(snapshot, "queues")
    age, error = _meta(snapshot, "queues")
    chips = []
    for q in queues:
        text = f"{clean(q.get('queue'))} {q.get('length', 0)}"
        if q.get("pending"):
            oldest = q.get("oldest_pending_age")
            text += f" ({q['pending']} running{', oldest ' + ago(oldest) if oldest else ''})"
        chips.append(text)
    first = (theme.paint("bad", f"unavailable: {clean(error)}") if error and not queues
             else LOADING if loading(snapshot, "health")
             else "  ·  ".join(chips) or theme.paint("dim", "no queue yet"))
    dead = snapshot.get("dead") or {}
    by_queue = ", ".join(f"{clean(k)} {v}" for k, v in (dead.get("by_queue") or {}).items())
    parts = [theme.paint("bad" if dead.get("count") else "dim",
                         f"dead {dead.get('count', 0)}" + (f" ({by_queue})" if by_queue else ""))]
    pause = snapshot.get("pause")
    if pause:
        until = str(pause.get("until_ts") or pause.get("until") or "")  # queue.pause's record
        parts.append(theme.paint("warn", f"PAUSED until {until[11:16] or until} by "
                                         f"{clean(pause.get('by'))}: {clean(pause.get('reason'))}"))
    budget = snapshot.get("budget") or {}
    if budget.get("spent_today_usd") is not None:
        cap = budget.get("daily_usd")
        over = cap is not None and budget["spent_today_usd"] >= cap
        parts.append(theme.paint("bad" if over else "", f"spent ${budget['spent_today_usd']:.2f}"
                                 + (f" of ${cap:.2f}" if cap is not None else "") + " today"))
    return [clip(theme.paint("header", fit("queues", 9)) + " " + first + _old(age), columns),
            clip(" " * 10 + "  ·  ".join(parts), columns)][:rows]


def _peers(snapshot, view, columns, rows, theme) -> list[str]:
    shown = visible(view, snapshot)
    total = len(snapshot.get("peers") or [])
    age, error = _meta(snapshot, "peers")
    title = f"peers {len(shown)}/{total} · sort {view.sort} {'desc' if view.reverse else 'asc'}"
    if view.filter:
        title += f" · filter /{clean(view.filter)}/"
    if error:
        title += f" · {clean(error)}"
    if loading(snapshot, "health"):
        title += f" {LOADING}"
    cells = peers.fitting(columns)
    header = " " * peers.MARK + peers.header(cells)
    lines = [_rule(title + _old(age), columns, theme), theme.paint("header", header)]
    room = rows - 2
    ids = [r.get("id") for r in shown]
    at = ids.index(view.selected) if view.selected in ids else 0
    start = min(max(at - room + 1, 0), max(len(shown) - room, 0))
    for row in shown[start:start + room]:
        lines.append(_peer_row(row, cells, row.get("id") == view.selected, theme))
    return lines + [""] * (rows - len(lines))


def _peer_row(row, cells, selected, theme) -> str:
    texts = peers.texts(row, cells)
    if selected:
        return theme.paint("selected", "› " + " ".join(t for _, t in texts))
    styled = [theme.paint(_cell_style(c.name, row), t) for c, t in texts]
    return "  " + " ".join(styled)


def _cell_style(name, row) -> str:
    if name == "state":
        return STATE_STYLES.get(row.get("state"), "")
    if name == "forecast":
        return FORECAST_STYLES.get(row.get("forecast"), "")
    return ""


def gpu_lines(snapshot, view, columns, rows, theme) -> list[str]:
    gpus = _items(snapshot, "gpus")
    age, error = _meta(snapshot, "gpus")
    if not gpus:
        absent = ((snapshot.get("sources") or {}).get("gpus") or {}).get("absent")
        why = (LOADING if loading(snapshot, "gpus") else clean(error) if error
               else clean(absent) if absent else "no GPU")
        return [theme.paint("dim", fit(f"{'gpu':<9} {why}", columns))][:rows]
    label = 14
    room = max((columns - label - 47) // 2, 4)  # 47: the words and figures around the two
    lines = []
    for gpu in gpus[:rows]:
        util, mem = gpu.get("util_history") or [], gpu.get("mem_history") or []
        used = (f" {size(gpu.get('mem_used'))}/{size(gpu.get('mem_total'))}"
                if gpu.get("mem_total") else "")
        text = (fit(clean(f"GPU{gpu.get('index', '?')} {gpu.get('name') or ''}"), label)
                + f" util {theme.paint('ok', sparkline(util, room, 100.0))} {_last(util)}"
                + f"  mem {theme.paint('info', sparkline(mem, room, 100.0))} {_last(mem)}{used}")
        lines.append(clip(text, columns))
    return lines


def _last(values) -> str:
    return f"{values[-1]:3.0f}%" if values and values[-1] is not None else "   -"


def _feed(snapshot, view, columns, rows, theme) -> list[str]:
    events = _items(snapshot, "events")
    age, error = _meta(snapshot, "events")
    title = ("events" + (f" · {clean(error)}" if error else "") + _old(age)
             + (f" {LOADING}" if loading(snapshot, "events") else ""))
    recent = events[-(rows - 1):] if rows > 1 else []
    lines = [event_line(e, columns, theme) for e in recent]
    return [_rule(title, columns, theme)] + [""] * (rows - 1 - len(lines)) + lines


def event_line(event: dict, columns: int, theme) -> str:
    if not isinstance(event, dict):
        return fit(clean(event), columns)
    kind = str(event.get("event") or event.get("kind") or "?")
    subject_key = next((k for k in _SUBJECTS if event.get(k) is not None), None)
    rest = " ".join(f"{k}={clean(v)[:40]}" for k, v in event.items()
                    if k not in _QUIET and k != subject_key)
    head = f"{str(event.get('ts') or '')[11:19]:8} "
    return clip(head + theme.paint(event_style(kind), fit(clean(kind), 18)) + " "
                + fit(clean(event.get(subject_key)) if subject_key else "", 14) + " "
                + clean(rest), columns)


def event_style(kind: str) -> str:
    """A theme role for an event kind: failures bad, completions ok, waits warn, else its
    family's colour."""
    if any(word in kind for word in _BAD_WORDS):
        return "bad"
    if kind.endswith(_OK_ENDS):
        return "ok"
    if any(word in kind for word in _WARN_WORDS):
        return "warn"
    return _FAMILIES.get(kind.split(".", 1)[0], "")


def _status(snapshot, view, columns, theme) -> str:
    """The bottom line: the prompt being edited, else the last message, else key hints."""
    if view.mode == "command":
        ghost = suggestion(view.line, Known.of(snapshot))
        return (theme.paint("prompt", ":") + clean(view.line) + theme.paint("selected", " ")
                + theme.paint("ghost", clean(ghost)) + _message(view, theme))
    if view.mode == "filter":
        return theme.paint("prompt", "/") + clean(view.filter) + theme.paint("selected", " ")
    if view.message:
        return _message(view, theme)
    if view.mode == "help":
        return theme.paint("dim", " Esc or ? closes the help")
    return theme.paint("dim", " " + keys.hints(view.mode))


def _message(view, theme) -> str:
    return theme.paint("error", "  " + clean(view.message)) if view.message else ""


# -- detail and help ---------------------------------------------------------------------

def _detail(snapshot, view, columns, rows, theme) -> list[str]:
    """One peer: its row, its locks, then its events, inbox, the current task's trace (the
    last task's while it waits) and its log tail in four fixed sections."""
    row = next((r for r in peers.rows(snapshot) if r.get("id") == view.selected), None)
    if row is None:
        return [_rule(f"peer {clean(view.selected)}", columns, theme),
                theme.paint("warn", f"{clean(view.selected)} is no longer registered")] \
            + [""] * (rows - 2)
    cells = peers.fitting(columns)
    lines = [_rule(f"peer {clean(row['id'])}", columns, theme),
             theme.paint("header", " " * peers.MARK + peers.header(cells)),
             _peer_row(row, cells, False, theme)]
    detail = snapshot.get("detail") or {}
    if detail.get("peer") != view.selected:
        return lines + [theme.paint("dim", "loading…")] + [""] * (rows - len(lines) - 1)
    locks = detail.get("locks") or {}
    lines.append(f"locks  held: {', '.join(map(clean, locks.get('held') or [])) or '-'}"
                 f"  ·  waiting for: {', '.join(map(clean, locks.get('waiting') or [])) or '-'}"
                 + (theme.paint("error", f"  {clean(detail['error'])}")
                    if detail.get("error") else "") + _old(detail.get("age")))
    sections = (("events", detail.get("events") or []),
                ("inbox", [f"{str(m.get('ts') or '')[11:19]} {clean(m.get('from'))}: "
                           f"{clean(m.get('body'))}" for m in detail.get("inbox") or []]),
                (_trace_title(detail), detail.get("trace") or []),
                ("log", detail.get("log") or []))
    each = (rows - len(lines)) // len(sections)
    for index, (title, items) in enumerate(sections):
        room = each if index < len(sections) - 1 else rows - len(lines)
        shown = items[-(room - 1):] if room > 1 else []
        lines.append(_rule(title, columns, theme))
        lines += [event_line(i, columns, theme) for i in shown]
        lines += [""] * (room - 1 - len(shown))
    return lines


def _trace_title(detail: dict) -> str:
    task = detail.get("trace_task")
    if detail.get("trace_last"):
        return f"trace of its last task {clean(task)} (waiting now)"
    return f"trace of its task {clean(task)}" if task else "trace of its task"


def _help(columns, rows, theme) -> list[str]:
    """The key table under a heading per run of equal modes, flowed down then across in
    as many columns as it needs."""
    cells, heading = [], None
    for modes, label, text in keys.overlay():
        if modes != heading:
            cells.append(("", f"in {modes}"))
            heading = modes
        cells.append((label, text))
    across = -(-len(cells) // rows)
    column = columns // across
    key = min(max(width(label) for label, _ in cells) + 1, column // 3)
    grid = [""] * rows
    for index, (label, text) in enumerate(cells):
        cell = (fit(label, key) + " " + fit(text, column - key - 2) + " " if label
                else theme.paint("title", fit(text, column)))
        grid[index % rows] += cell
    return grid


_PANELS = {"services": _services, "queues": _queues, "peers": _peers, "gpus": gpu_lines,
           "feed": _feed}


# -- writing a frame ---------------------------------------------------------------------

def frame_diff(old: list[str] | None, new: list[str], sync: bool = True) -> str:
    """What to write to turn the screen showing `old` into `new`: only the rows that
    changed, each addressed with CUP; a full repaint (clear, every row) when there is no
    old frame or its height differs (a resize, or the periodic repair). Lines are exactly
    as wide as the screen, so no erase-to-end is needed (which would, at the last column,
    erase the last character). Wrapped in synchronized-output marks (DEC 2026) so a
    terminal that knows them shows the frame at once, and others ignore them."""
    full = old is None or len(old) != len(new)
    rows = [(i, line) for i, line in enumerate(new) if full or old[i] != line]
    if not rows:
        return ""
    body = "".join(f"\x1b[{i + 1};1H\x1b[0m{line}" for i, line in rows)
    body = ("\x1b[H\x1b[2J" if full else "") + body
    return f"\x1b[?2026h{body}\x1b[?2026l" if sync else body
