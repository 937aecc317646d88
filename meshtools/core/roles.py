"""The roles as data: the package's roles.toml, overridden key by key by MESH_HOME/roles.toml.

A malformed file is refused with its path, line and key (exit 78), so that a typo in one
role never starts an agent with the wrong boundaries.
"""

import fnmatch
import os
import re
from typing import NamedTuple

from .errors import BadInput, ConfigError
from .home import MeshHome
from .ids import validate_name

ANCHOR = "anchor"
# A role without a `tools` key gets these (`--tools`): never the CLI's whole default set,
# so a tool a CLI release adds stays off until a role names it.
READ_TOOLS = ("Read", "Grep", "Glob")
EDIT_TOOLS = ("Edit", "Write", "MultiEdit")
_TOOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class Role(NamedTuple):
    name: str
    description: str
    model: str
    queue: str
    charter: str
    prompt: str
    capabilities: tuple[str, ...] = ()
    tools: tuple[str, ...] | None = None
    disallowed_tools: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    lands: bool = False
    concurrency: int = 1
    every: float | None = None  # seconds between standing tasks
    timeout: float | None = None
    max_budget_usd: float | None = None
    route_words: tuple[tuple[str, float], ...] = ()  # (regex, weight): mesh.routing
    route_paths: tuple[tuple[str, float], ...] = ()  # (glob, weight)
    source: str = ""

    @property
    def read_only(self) -> bool:
        return not self.writes

    def summary(self) -> dict:
        return {"kind": "role", "name": self.name, "model": self.model, "queue": self.queue,
                "concurrency": self.concurrency, "lands": self.lands,
                "read_only": self.read_only, "every": self.every,
                "description": self.description}

    def record(self) -> dict:
        return {**self.summary(), "capabilities": list(self.capabilities),
                "tools": list(self.tools) if self.tools is not None else None,
                "disallowed_tools": list(self.disallowed_tools), "writes": list(self.writes),
                "timeout": self.timeout, "max_budget_usd": self.max_budget_usd,
                "route_words": dict(self.route_words), "route_paths": dict(self.route_paths),
                "charter": self.charter, "prompt": self.prompt, "source": self.source}


# key -> (the TOML types it accepts, a converter to the Role field)
def _strings(value):
    return tuple(value)


def _tools(value) -> tuple[str, ...]:
    """Built-in tool names as `--tools=A,B` takes them: a comma or a rule in one would
    make the list mean something else."""
    for name in value:
        if not _TOOL_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a tool name (letters, digits, _)")
    return tuple(value)


def default_tools(writes) -> tuple[str, ...]:
    """The tools of a role that names none: reading, and editing where it may write."""
    return READ_TOOLS + (EDIT_TOOLS if writes else ())


def _weights(table: dict) -> tuple[tuple[str, float], ...]:
    """A routing table, pattern -> weight (a finite number). Checked cheaply here: the word
    patterns are compiled where they are used (mesh.routing), not on every load (the
    lock gate loads the roles)."""
    import math

    for pattern, weight in table.items():
        if not pattern:
            raise ValueError("an empty pattern matches everywhere")
        if (isinstance(weight, bool) or not isinstance(weight, (int, float))
                or not math.isfinite(weight)):
            raise ValueError(f"{pattern!r}: the weight must be a finite number")
    return tuple(table.items())


_KEYS = {
    "description": (str, str), "model": (str, str), "queue": (str, str),
    "charter": (str, str), "prompt": (str, str),
    "capabilities": (list, _strings), "tools": (list, _tools),
    "disallowed_tools": (list, _strings), "writes": (list, _strings),
    "lands": (bool, bool), "concurrency": (int, int),
    "every": ((str, int, float), lambda v: parse_duration(v)),
    "timeout": ((int, float), float), "max_budget_usd": ((int, float), float),
    "route_words": (dict, _weights), "route_paths": (dict, _weights),
}
_REQUIRED = ("description", "model", "charter", "prompt")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


MAX_DURATION = 10 * 365 * 86400  # ten years: beyond, a deadline overflows the clock's range


def parse_duration(value) -> float:
    """'90s', '15m', '6h', '1d' or a number of seconds; > 0, finite (TOML has nan and inf)
    and at most MAX_DURATION (1e21 seconds from now is no time the clock can show)."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a duration like 30m, 6h or 1d")
        seconds = float(match[1]) * _UNITS[match[2] or "s"]
    if not seconds > 0:  # nan too
        raise ValueError("must be more than 0")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION // 86400} days")
    return seconds


def packaged_text() -> tuple[str, str]:
    path = os.path.join(os.path.dirname(__file__), "roles.toml")
    with open(path, encoding="utf-8") as f:
        return path, f.read()


def _parse(path: str, text: str) -> dict:
    import tomllib  # here: coord-register and the lock gate reach this module

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}")
    roles = data.get("roles", {})
    unknown = set(data) - {"roles"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{path}:{_line_of(text, None, key)}: unknown table or key {key!r} "
                          "(roles go in [roles.NAME] tables)")
    if not isinstance(roles, dict):
        raise ConfigError(f"{path}:{_line_of(text, None, 'roles')}: 'roles' must be a table")
    for name, table in roles.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}:{_line_of(text, None, name)}: roles.{name} must be a table")
    return roles


def _line_of(text: str, role: str | None, key: str) -> int:
    """The line where key is set (inside [roles.ROLE] when role is given); 1 if not found."""
    lines = text.splitlines()
    start = 0
    if role is not None:
        header = re.compile(r"\s*\[\s*roles\s*\.\s*\"?" + re.escape(role) + r"\"?\s*\]")
        for n, line in enumerate(lines):
            if header.match(line):
                start = n
                break
    setting = re.compile(r"\s*\"?" + re.escape(key) + r"\"?\s*=|\s*\[\s*" + re.escape(key)
                         + r"|\s*\[[^\]]*\.\s*\"?" + re.escape(key) + r"\"?\s*\]")
    for n in range(start, len(lines)):
        if setting.match(lines[n]):
            return n + 1
    return start + 1


def _build(name: str, table: dict, path: str, text: str) -> Role:
    def bad(key, why):
        return ConfigError(f"{path}:{_line_of(text, name, key)}: roles.{name}.{key}: {why}")

    try:
        validate_name(name, "role")
    except BadInput as e:
        raise ConfigError(f"{path}:{_line_of(text, None, name)}: {e}")
    fields = {}
    for key, value in table.items():
        if key not in _KEYS:
            raise bad(key, f"unknown key (known: {', '.join(sorted(_KEYS))})")
        kinds, convert = _KEYS[key]
        if isinstance(value, bool) and kinds is not bool:
            raise bad(key, "must not be true/false")
        if not isinstance(value, kinds):
            raise bad(key, f"must be {_describe(kinds)}, not {type(value).__name__}")
        if kinds is list and not all(isinstance(v, str) for v in value):
            raise bad(key, "must be a list of strings")
        try:
            fields[key] = convert(value)
        except ValueError as e:
            raise bad(key, str(e))
    for key in _REQUIRED:
        if not fields.get(key):
            raise bad(key, "missing (every role needs " + ", ".join(_REQUIRED) + ")")
    if fields.get("concurrency", 1) < 1:
        raise bad("concurrency", "must be at least 1")
    if name == ANCHOR and fields.get("concurrency", 1) != 1:
        raise bad("concurrency", "a mesh has exactly one anchor: must be 1")
    for key in ("timeout", "max_budget_usd"):
        if key in fields and fields[key] <= 0:
            raise bad(key, "must be more than 0")
    fields.setdefault("queue", name)
    fields.setdefault("tools", default_tools(fields.get("writes")))
    try:
        validate_name(fields["queue"], "queue")
    except BadInput as e:
        raise bad("queue", str(e))
    return Role(name=name, source=path, **fields)


def load(home: MeshHome | None = None) -> dict[str, Role]:
    """Every role, by name: the packaged ones with the mesh's overrides applied."""
    path, text = packaged_text()
    tables = {name: (dict(t), path, text) for name, t in _parse(path, text).items()}
    if home is not None:
        override = home.roles_file
        try:
            with open(home.trusted(override), encoding="utf-8") as f:
                own = f.read()
        except FileNotFoundError:
            own = None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{override}: cannot read: {e}")
        if own is not None:
            for name, table in _parse(override, own).items():
                base = tables.get(name, ({}, override, own))[0]
                tables[name] = ({**base, **table}, override, own)
    roles = {name: _build(name, table, p, t) for name, (table, p, t) in tables.items()}
    return roles


def of_queue(roles: dict[str, Role], queue: str | None) -> Role | None:
    """The role whose workers drain queue (its `queue` key, by default its name): how a task
    routed by queue alone finds its role. Where several drain it, the one named like it;
    None when that leaves no single role."""
    found = [role for role in roles.values() if role.queue == queue]
    if len(found) > 1:
        found = [role for role in found if role.name == queue]
    return found[0] if len(found) == 1 else None


def queue_of(roles: dict[str, Role], name: str) -> str:
    """The queue a task for role `name` goes to (its `queue` key, by default its name);
    BadInput (65) for a role the mesh does not define: no worker would ever drain it."""
    if name not in roles:
        raise BadInput(unknown(name, roles))
    return roles[name].queue


def get(home: MeshHome | None, name: str) -> Role:
    """One role, or exit 65 naming the roles there are (and the near miss, if any)."""
    validate_name(name, "role")
    roles = load(home)
    if name not in roles:
        raise BadInput(unknown(name, roles))
    return roles[name]


def unknown(name: str, roles) -> str:
    """The refusal of a role the mesh does not define: the roles, and `did you mean`."""
    from .errors import did_you_mean

    known = sorted(roles)
    return f"unknown role {name!r} (roles: {', '.join(known)}){did_you_mean(name, known)}"


def may_write(role: Role, path: str) -> bool:
    """Whether the role's `writes` globs cover a repository-relative path ('*' spans '/')."""
    return any(fnmatch.fnmatchcase(path, glob) for glob in role.writes)


def human_duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def _describe(kinds) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names[k] for k in kinds)
