"""The peer table as data: its columns, the rows joined from the snapshot's sources, and
the filter and sort a view applies. The renderer draws it; view moves the selection over
the same visible rows, so what is selected is what is seen."""

import functools
import re
from dataclasses import dataclass
from typing import Callable

from .text import ago, clean, fit, size


@dataclass(frozen=True)
class Column:
    name: str
    label: str
    key: str  # the key that sorts by it
    width: int
    value: Callable  # row -> what it sorts by (None sorts last)
    text: Callable  # row -> the cell's text
    right: bool = False


def _get(name):
    return lambda row: row.get(name)


def _text(name):
    return lambda row: "-" if row.get(name) is None else str(row[name])


def _pct(row):
    return "-" if row.get("cpu") is None else f"{row['cpu']:.0f}%"


def _cost(row):
    return "-" if row.get("cost") is None else f"${row['cost']:.2f}"


COLUMNS = (
    Column("id", "PEER", "N", 14, _get("id"), _text("id")),
    Column("role", "ROLE", "R", 9, _get("role"), _text("role")),
    Column("state", "STATE", "T", 6, _get("state"), _text("state")),
    Column("heartbeat", "BEAT", "H", 5, _get("heartbeat_age"),
           lambda r: ago(r.get("heartbeat_age")), right=True),
    Column("phase", "PHASE", "P", 12, _get("phase"), _text("phase")),
    Column("phase_age", "FOR", "A", 5, _get("phase_age"),
           lambda r: ago(r.get("phase_age")), right=True),
    Column("task", "TASK", "K", 16, _get("task"), _text("task")),
    Column("cpu", "CPU", "C", 5, _get("cpu"), _pct, right=True),
    Column("mem", "MEM", "M", 6, _get("rss"), lambda r: size(r.get("rss")), right=True),
    Column("branch", "BRANCH", "B", 16, _get("branch"), _text("branch")),
    Column("unpicked", "UNP", "U", 3, _get("unpicked"), _text("unpicked"), right=True),
    Column("forecast", "FORECAST", "F", 8, _get("forecast"), _text("forecast")),
    Column("cost", "COST", "$", 6, _get("cost"), _cost, right=True),
)
BY_NAME = {c.name: c for c in COLUMNS}
# Narrow screens drop columns in this order until the table fits; id, role, state and
# phase always stay. (Documented in meshtools(7), THE MESH: the dash and mesh-top.)
DROP_ORDER = ("branch", "forecast", "unpicked", "cost", "mem", "phase_age", "heartbeat",
              "cpu", "task")
FLEX = "task"  # the column that takes the width left over
GAP = 1  # spaces between cells
MARK = 2  # the selection marker's columns before the first cell


def rows(snapshot: dict) -> list[dict]:
    """Each registered peer joined with its process tree (procs), its role's branch and
    forecast (git) and its role's spend today (budget.by_role)."""
    procs = snapshot.get("procs") or {}
    git = snapshot.get("git") or {}
    by_role = (snapshot.get("budget") or {}).get("by_role") or {}
    out = []
    for peer in snapshot.get("peers") or []:
        proc = procs.get(peer.get("id")) or {}
        work = git.get(peer.get("role")) or {}
        out.append({**peer, "cpu": proc.get("cpu"), "rss": proc.get("rss"),
                    "branch": peer.get("branch") or work.get("branch"),
                    "unpicked": work.get("unpicked"), "forecast": work.get("forecast"),
                    "cost": by_role.get(peer.get("role"))})
    return out


@functools.lru_cache(maxsize=32)
def pattern(text: str) -> tuple[re.Pattern, bool]:
    """The filter as typed: a regex (case-insensitive; one that does not compile is taken
    literally) and whether a leading '!' inverts it."""
    inverted = text.startswith("!")
    body = text[1:] if inverted else text
    try:
        return re.compile(body, re.IGNORECASE), inverted
    except re.error:
        return re.compile(re.escape(body), re.IGNORECASE), inverted


def matches(row: dict, text: str) -> bool:
    if not text:
        return True
    regex, inverted = pattern(text)
    haystack = " ".join(str(row.get(k) or "") for k in ("id", "role", "state", "phase",
                                                        "task", "branch"))
    return bool(regex.search(haystack)) != inverted


def visible(snapshot: dict, filter_text: str = "", sort: str = "id",
            reverse: bool = False) -> list[dict]:
    """The rows the table shows, in its order: filtered, then sorted (unknown values last
    whichever the direction)."""
    column = BY_NAME.get(sort, COLUMNS[0])
    shown = [r for r in rows(snapshot) if matches(r, filter_text)]
    known = [r for r in shown if column.value(r) is not None]
    unknown = [r for r in shown if column.value(r) is None]
    known.sort(key=lambda r: (column.value(r), str(r.get("id"))), reverse=reverse)
    return known + sorted(unknown, key=lambda r: str(r.get("id")))


def fitting(columns_wide: int) -> list[tuple[Column, int]]:
    """The columns that fit in columns_wide, dropped in DROP_ORDER; the flex column (while
    it stays) gets what is left. Widths as drawn: (column, width) pairs."""
    names = [c.name for c in COLUMNS]
    drop = list(DROP_ORDER)

    def need(kept):
        return MARK + sum(BY_NAME[n].width + GAP for n in kept) - GAP

    while need(names) > columns_wide and drop:
        names.remove(drop.pop(0))
    spare = max(columns_wide - need(names), 0)
    return [(BY_NAME[n], BY_NAME[n].width + (spare if n == FLEX else 0)) for n in names]


def header(cells: list[tuple[Column, int]]) -> str:
    """The table's header line for these fitting() cells (after the marker's columns)."""
    return " ".join(fit(c.label, w, c.right) for c, w in cells)


def texts(row: dict, cells: list[tuple[Column, int]]) -> list[tuple[Column, str]]:
    """A row's cells as drawn, each cut or padded to its width."""
    return [(c, fit(clean(c.text(row)), w, c.right)) for c, w in cells]
