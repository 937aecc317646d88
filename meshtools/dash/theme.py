"""Themes: a style role (ok, bad, selected, ...) resolved to an escape string once, so the
renderer needs no terminal library. `mono` keeps attributes only (bold, dim, reverse, no
colour): it is what NO_COLOR gets, since users expect layout and emphasis to stay there."""

from dataclasses import dataclass, field

RESET = "\x1b[0m"

_SGR = {  # role: SGR parameters
    "dark": {"title": "1;36", "header": "1", "dim": "2", "ok": "32", "warn": "33",
             "bad": "1;31", "info": "36", "accent": "35", "selected": "7", "ghost": "2",
             "error": "1;31", "prompt": "1;33"},
    "light": {"title": "1;34", "header": "1", "dim": "2", "ok": "32", "warn": "38;5;130",
              "bad": "1;31", "info": "34", "accent": "35", "selected": "7", "ghost": "2",
              "error": "1;31", "prompt": "1;34"},
    "mono": {"title": "1", "header": "1", "dim": "2", "warn": "1", "bad": "1",
             "selected": "7", "ghost": "2", "error": "1", "prompt": "1"},
}
NAMES = tuple(_SGR)  # the order `t` cycles through


@dataclass(frozen=True)
class Theme:
    name: str
    styles: dict = field(default_factory=dict)  # role: escape string ("" or absent: none)

    def paint(self, role: str, text: str) -> str:
        start = self.styles.get(role)
        return f"{start}{text}{RESET}" if start and text else text


def theme(name: str, no_color: bool = False) -> Theme:
    """The named theme (an unknown name: the first); NO_COLOR always gets mono."""
    name = "mono" if no_color else (name if name in _SGR else NAMES[0])
    return Theme(name, {role: f"\x1b[{sgr}m" for role, sgr in _SGR[name].items()})


def following(name: str) -> str:
    """The theme after name, for `t`."""
    return NAMES[(NAMES.index(name) + 1) % len(NAMES)] if name in NAMES else NAMES[0]
