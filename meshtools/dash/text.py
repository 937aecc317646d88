"""Cells for a terminal: plain text cleaned of control characters, measured in columns
(wide characters count two, escape sequences none), cut with an ellipsis and padded."""

import re

import wcwidth

ELLIPSIS = "…"
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# C0, DEL and C1 controls: data (a task's text, a log line) must never move the cursor.
_CONTROLS = {c: " " for c in (*range(0x20), *range(0x7f, 0xa0))}


def clean(value) -> str:
    """A value as one line of text that is safe to print: controls become spaces."""
    return ("-" if value is None else str(value)).translate(_CONTROLS)


def width(text: str) -> int:
    """Columns text takes on a terminal, escape sequences aside."""
    if "\x1b" in text:
        text = _ESCAPE.sub("", text)
    if text.isascii():
        return len(text)
    return max(wcwidth.wcswidth(text), 0)


def fit(text: str, columns: int, right: bool = False) -> str:
    """Plain text cut (with an ellipsis) or padded to exactly `columns` columns."""
    if columns <= 0:
        return ""
    have = width(text)
    if have > columns:
        text = _cut(text, columns - 1) + ELLIPSIS
        have = width(text)
    pad = " " * (columns - have)
    return pad + text if right else text + pad


def cut(text: str, columns: int) -> str:
    """Plain text cut (with an ellipsis) to at most `columns` columns, not padded: a line
    that must not wrap on a terminal (a line rewritten in place, a summary line)."""
    return text if width(text) <= columns else fit(text, columns)


def _cut(text: str, columns: int) -> str:
    """The longest prefix of plain text that takes at most `columns` columns."""
    if text.isascii():
        return text[:columns]
    out, used = [], 0
    for char in text:
        w = max(wcwidth.wcwidth(char), 0)
        if used + w > columns:
            break
        out.append(char)
        used += w
    return "".join(out)


def clip(line: str, columns: int) -> str:
    """A styled line made exactly `columns` wide: padded, or cut between escape sequences
    (every escape is kept, so styles still end with their reset)."""
    have = width(line)
    if have <= columns:
        return line + " " * (columns - have)
    out, used, pos = [], 0, 0
    for match in _ESCAPE.finditer(line):
        chunk = _cut(line[pos:match.start()], columns - used)
        used += width(chunk)
        out += [chunk, match.group()]
        pos = match.end()
    chunk = _cut(line[pos:], columns - used)
    return "".join(out) + chunk + " " * (columns - used - width(chunk))


def ago(seconds) -> str:
    """An age as a person reads it at a glance: 4s, 3m, 2h, 5d; '-' when unknown."""
    if seconds is None:
        return "-"
    seconds = max(float(seconds), 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def size(octets) -> str:
    """Bytes as 512K, 1.2M, 3.4G."""
    if octets is None:
        return "-"
    value = float(octets)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit in ("B", "K") else f"{value:.1f}{unit}"
        value /= 1024
    return "-"
