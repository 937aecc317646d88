"""The dash's view state as data and the one function that changes it: handle(view, key,
snapshot) -> (view, action). The action is None or a command for the I/O loop to run
({"cmd": "exec", ...}, {"cmd": "quit"}); nothing here reads a terminal or runs anything."""

from dataclasses import dataclass, replace

from ..core.errors import BadInput
from . import commands, keys, peers, theme


@dataclass(frozen=True)
class View:
    mode: str = "main"  # one of keys.MODES
    selected: str | None = None  # a peer id
    sort: str = "id"  # a peers.COLUMNS name
    reverse: bool = False
    filter: str = ""  # as typed: a regex, a leading '!' inverts
    paused: bool = False  # the display is frozen (the collector keeps going)
    theme: str = theme.NAMES[0]
    line: str = ""  # the command line being edited, without its ':'
    history: tuple = ()  # command lines, oldest first
    recalled: int | None = None  # the history entry on the line (↑/↓), None: a new line
    message: str | None = None  # one line for the person: an error or what was done
    back: str = "main"  # the mode help and command mode return to

    @property
    def inverted(self) -> bool:
        return self.filter.startswith("!")


def visible(view: View, snapshot: dict) -> list[dict]:
    """The peer rows as the view shows them."""
    return peers.visible(snapshot, view.filter, view.sort, view.reverse)


def handle(view: View, key: str, snapshot: dict) -> tuple[View, dict | None]:
    """One key (keys.key_of) in view's mode. A key the table does not bind is typed into
    the line in the modes that edit one, and ignored elsewhere (so terminal replies and
    stray sequences never leak into a prompt)."""
    if view.message:
        view = replace(view, message=None)
    name = keys.action(view.mode, key)
    if name is None:
        if view.mode in ("filter", "command") and len(key) == 1 and key.isprintable():
            return _edit(view, view_line(view) + key), None
        return view, None
    if name.startswith("sort:"):
        return _sort(view, name.split(":", 1)[1]), None
    return _ACTIONS[name](view, snapshot)


def view_line(view: View) -> str:
    """The text being edited: the filter in filter mode, else the command line."""
    return view.filter if view.mode == "filter" else view.line


def _edit(view: View, text: str) -> View:
    if view.mode == "filter":
        return replace(view, filter=text)
    return replace(view, line=text, recalled=None)


def _sort(view: View, column: str) -> View:
    if view.sort == column:
        return replace(view, reverse=not view.reverse)
    return replace(view, sort=column, reverse=False)


def _sort_next(view, snapshot):
    names = [c.name for c in peers.COLUMNS]
    following = names[(names.index(view.sort) + 1) % len(names)] if view.sort in names else names[0]
    return replace(view, sort=following, reverse=False), None


def _move(step):
    def move(view, snapshot):
        ids = [row["id"] for row in visible(view, snapshot)]
        if not ids:
            return view, None
        if view.selected in ids:
            at = min(max(ids.index(view.selected) + step, 0), len(ids) - 1)
        else:
            at = 0 if step > 0 else len(ids) - 1
        return replace(view, selected=ids[at]), None
    return move


def _open(view, snapshot):
    ids = [row["id"] for row in visible(view, snapshot)]
    if not ids:
        return replace(view, message="no peer to open"), None
    selected = view.selected if view.selected in ids else ids[0]
    return replace(view, mode="detail", selected=selected), None


def _mode(mode):
    def enter(view, snapshot):
        back = view.mode if view.mode in keys.BROWSING else view.back
        return replace(view, mode=mode, back=back, line="", recalled=None), None
    return enter


def _help(view, snapshot):
    """`?` opens the help, and closes it again."""
    return _back(view, snapshot) if view.mode == "help" else _mode("help")(view, snapshot)


def _back(view, snapshot):
    return replace(view, mode="main" if view.mode == "detail" else view.back), None


def _keep_filter(view, snapshot):
    return replace(view, mode="main"), None


def _clear_filter(view, snapshot):
    return replace(view, mode="main", filter=""), None


def _run(view, snapshot):
    """Parse the line: an action and back to browsing, or the error shown and the line
    kept for fixing. A parsed line joins the history."""
    try:
        action = commands.parse(view.line, commands.Known.of(snapshot))
    except BadInput as e:
        return replace(view, message=str(e)), None
    return replace(view, mode=view.back, line="", recalled=None,
                   history=commands.remember(view.history, view.line)), action


def _cancel(view, snapshot):
    return replace(view, mode=view.back, line="", recalled=None), None


def _complete(view, snapshot):
    rest = commands.suggestion(view.line, commands.Known.of(snapshot))
    return (replace(view, line=view.line + rest) if rest else view), None


def _recall(step):
    def recall(view, snapshot):
        if not view.history:
            return view, None
        at = (len(view.history) if view.recalled is None else view.recalled) + step
        if at >= len(view.history):
            return replace(view, line="", recalled=None), None
        at = max(at, 0)
        return replace(view, line=view.history[at], recalled=at), None
    return recall


def _delete(cut):
    def delete(view, snapshot):
        return _edit(view, cut(view_line(view))), None
    return delete


def _without_word(text: str) -> str:
    stripped = text.rstrip()
    return stripped[:len(stripped) - len(stripped.split(" ")[-1])]


_ACTIONS = {
    "quit": lambda view, snapshot: (view, {"cmd": "quit"}),
    "help": _help,
    "command": _mode("command"),
    "filter": lambda view, snapshot: (replace(view, mode="filter", back="main"), None),
    "back": _back,
    "clear_filter": _clear_filter,
    "keep_filter": _keep_filter,
    "sort_next": _sort_next,
    "up": _move(-1),
    "down": _move(1),
    "open": _open,
    "pause": lambda view, snapshot: (replace(view, paused=not view.paused), None),
    "theme": lambda view, snapshot: (replace(view, theme=theme.following(view.theme)), None),
    "run": _run,
    "cancel": _cancel,
    "complete": _complete,
    "older": _recall(-1),
    "newer": _recall(1),
    "backspace": _delete(lambda text: text[:-1]),
    "delete_word": _delete(_without_word),
    "delete_line": _delete(lambda text: ""),
}
