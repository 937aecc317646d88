"""The one key table: it drives the dispatcher (view.handle), the `?` overlay and the man
page's KEYS section, so a key is bound, shown and documented in one place.

A key is what blessed names it (`Keystroke.name`: KEY_UP, KEY_ENTER, KEY_CTRL_U, ...) or,
for a plain character, the character itself (key_of turns a keystroke into one).
"""

from dataclasses import dataclass

from .peers import COLUMNS

MODES = ("main", "detail", "help", "filter", "command")
BROWSING = ("main", "detail")


@dataclass(frozen=True)
class Key:
    keys: tuple  # the keys bound
    modes: tuple  # the modes where they act
    action: str  # what view.handle does ("sort:cpu": sort by that column)
    help: str


TABLE = (  # grouped by modes: the overlay shows one heading per run of equal modes
    Key(("q",), ("main", "detail", "help"), "quit", "quit"),
    Key(("?",), ("main", "detail", "help"), "help", "this help (again: close)"),
    Key(("t",), ("main", "detail", "help"), "theme", "theme: dark, light, mono"),
    Key((":",), BROWSING, "command", "command line (:exec, :send…)"),
    Key(("KEY_UP", "k"), BROWSING, "up", "select the peer above"),
    Key(("KEY_DOWN", "j"), BROWSING, "down", "select the peer below"),
    Key(("p",), BROWSING, "pause", "pause display (feed buffers)"),
    Key(("KEY_ENTER",), ("main",), "open", "the selected peer's detail"),
    Key(("/",), ("main",), "filter", "filter: regex, !re inverts"),
    Key(("KEY_ESCAPE",), ("main",), "clear_filter", "clear the filter"),
    Key(("s",), ("main",), "sort_next", "next sort column"),
    *(Key((c.key,), ("main",), f"sort:{c.name}", f"sort: {c.label.lower()} (again: desc)")
      for c in COLUMNS),
    Key(("KEY_ESCAPE",), ("detail", "help"), "back", "back to the mesh"),
    Key(("KEY_ENTER",), ("filter",), "keep_filter", "keep the filter"),
    Key(("KEY_ESCAPE",), ("filter",), "clear_filter", "clear the filter"),
    Key(("KEY_ENTER",), ("command",), "run", "run the command"),
    Key(("KEY_ESCAPE",), ("command",), "cancel", "leave command mode"),
    Key(("KEY_TAB", "KEY_RIGHT"), ("command",), "complete", "take the suggestion"),
    Key(("KEY_UP",), ("command",), "older", "older command (history)"),
    Key(("KEY_DOWN",), ("command",), "newer", "newer command"),
    Key(("KEY_BACKSPACE",), ("filter", "command"), "backspace", "delete a character"),
    Key(("KEY_CTRL_W",), ("filter", "command"), "delete_word", "delete a word"),
    Key(("KEY_CTRL_U",), ("filter", "command"), "delete_line", "delete the line"),
)
BINDINGS = {(mode, key): entry.action for entry in TABLE for mode in entry.modes
            for key in entry.keys}
HINTS = ("quit", "help", "filter", "command", "sort_next", "open")  # the status line's
LABELS = {"KEY_UP": "↑", "KEY_DOWN": "↓", "KEY_RIGHT": "→", "KEY_ENTER": "Enter",
          "KEY_ESCAPE": "Esc", "KEY_TAB": "Tab", "KEY_BACKSPACE": "Backspace",
          "KEY_CTRL_W": "^W", "KEY_CTRL_U": "^U"}


def key_of(keystroke) -> str:
    """A blessed Keystroke (or a plain string) as the table names keys."""
    return getattr(keystroke, "name", None) or str(keystroke)


def action(mode: str, key: str) -> str | None:
    return BINDINGS.get((mode, key))


def label(entry: Key) -> str:
    """The keys of an entry as a person reads them: `↑ k`, `Esc ?`."""
    return " ".join(LABELS.get(k, k) for k in entry.keys)


def overlay() -> list[tuple[str, str, str]]:
    """(modes, keys, help) for the `?` overlay, each entry once, in table order."""
    return [(" · ".join(e.modes), label(e), e.help) for e in TABLE]


def hints(mode: str) -> str:
    """The status line's reminder of the main keys of a mode."""
    return "  ".join(f"{label(e)} {e.action.replace('_next', '')}" for name in HINTS
                     for e in TABLE if e.action == name and mode in e.modes)


def man_section(esc) -> list[str]:
    """The man page's KEYS section (roff lines); esc is the generator's roff escaping."""
    lines, heading = [".SH KEYS"], None
    for modes, keys, text in overlay():
        if modes != heading:
            lines.append(".SS " + esc(f"in {modes}"))
            heading = modes
        lines += [".TP", f"\\fB{esc(keys)}\\fR", esc(text)]
    return lines
