"""config.toml through one loader that knows every section, key, type and default (SCHEMA),
so a value of the wrong type is a configuration error (78) that names the file, line and key,
not a crash (70) where the value is used, and no caller repeats a type or a default:

    stale = config.value(home, "coord", "stale_after")    # an int is fine, "abc" is not

A key or section the schema does not know (a typo like `stale_afer`) is warned about on
stderr, once per process, naming file:line: a warning, not 78, so that a running mesh (the
anchor, its supervisors) is not stopped by a slip in a table it does not even read.

tomllib stays out of start-up: MeshHome.config parses the file on first use.
"""

import math
import os
import re
import sys
from typing import NamedTuple

from .errors import ConfigError

_WHAT = {float: "a number", int: "an integer", str: "a string", bool: "true or false",
         list: "a list", dict: "a table"}


class Key(NamedTuple):
    kind: type | tuple  # what Section.get checks the value against
    default: object = None  # None: unset, the code that reads it decides
    of: type | None = None  # a list's items


# section -> key -> Key: every setting of config.toml. `meshctl init` writes a template
# that tests/test_config.py checks against this.
SCHEMA: dict[str, dict[str, Key]] = {
    "coord": {"stale_after": Key(float, 60.0), "dead_after": Key(float, 600.0)},
    "locks": {"manifests": Key(list, ("Cargo.toml", "pyproject.toml", "package.json", "go.mod"),
                               of=str),
              "rule": Key(list, ())},  # [[locks.rule]] match, scope: checked by locks.scopes
    "worktrees": {"root": Key(str), "main": Key(str)},
    "pick": {"gate": Key(str)},
    "anchor": {"max_handbacks": Key(int, 1), "stuck_after": Key(float, 1800.0),
               "fatal_cooldown": Key((int, float, str), 300.0), "fatal_respawns": Key(int, 3)},
    "budget": {"daily_usd": Key(float)},
    # a task retried after a rate limit or an overload waits base*2^(attempt-1) s (jittered)
    "retry": {"base": Key(float, 15.0), "cap": Key(float, 300.0)},
    "agent": {"command": Key((str, list))},
    # mesh-spawn passes the ones set on to mesh-supervise as options, whose defaults these
    # are (rerun_delay: a persistent agent's, mesh-spawn's), and which check their ranges
    "supervisor": {"base": Key(float, 1.0), "cap": Key(float, 60.0),
                   "min_uptime": Key(float, 10.0), "max_failures": Key(int, 5),
                   "grace": Key(float, 10.0), "rerun_delay": Key(float, 30.0)},
    # arrays of tables ([[dash.service]]), their entries' keys in ENTRIES
    "dash": {"service": Key(list, (), of=dict), "offload": Key(list, (), of=dict)},
}
# sections of named sub-tables ([agents.NAME]): the keys of each one
TABLES: dict[str, dict[str, Key]] = {
    "agents": {"command": Key((str, list)), "output": Key(str, "text")},
}
# arrays of tables ([[section.key]]): the keys of each entry (read with Section.entries;
# a key without a default that the reader needs is Section.required)
ENTRIES: dict[tuple[str, str], dict[str, Key]] = {
    # kind: tcp | http | unix | pidfile | command (dash.sources.services checks)
    ("dash", "service"): {"name": Key(str), "kind": Key(str), "target": Key(str),
                          "timeout": Key(float, 2.0)},
    # kind: ollama | openai | http (dash.sources.offload)
    ("dash", "offload"): {"name": Key(str), "url": Key(str), "kind": Key(str, "http"),
                          "timeout": Key(float, 3.0)},
}


def schema_of(names: tuple[str, ...]) -> dict[str, Key]:
    """The keys the table at names may set (KeyError for a table the schema lacks)."""
    if names in ENTRIES:
        return ENTRIES[names]
    if len(names) == 2 and names[0] in TABLES:
        return TABLES[names[0]]
    if len(names) != 1:
        raise KeyError(".".join(names))
    return SCHEMA[names[0]]


def default(section_name: str, key: str):
    return SCHEMA[section_name][key].default


def unknown(data: dict) -> list[tuple[tuple[str, ...], str]]:
    """(table names, key) of every setting in data the schema does not know; pure."""
    found = []
    for name, table in data.items():
        if name not in SCHEMA and name not in TABLES:
            found.append(((), name))
        elif isinstance(table, dict):
            subtables = table.items() if name in TABLES else [(None, table)]
            for sub, keys in subtables:
                if not isinstance(keys, dict):
                    continue  # a wrong type: the reader of that table says so (78)
                names = (name,) if sub is None else (name, sub)
                found += [(names, key) for key in keys if key not in schema_of(names)]
                found += _unknown_in_entries(names, keys)
    return found


def _unknown_in_entries(names: tuple[str, ...], keys: dict) -> list:
    """(array names, key) of each key an entry of an array of tables in keys sets that its
    ENTRIES schema lacks; pure."""
    found = []
    for key, entries in keys.items():
        schema = ENTRIES.get((*names, key))
        if schema is not None and isinstance(entries, list):
            found += [((*names, key), entry_key) for entry in entries
                      if isinstance(entry, dict) for entry_key in entry
                      if entry_key not in schema]
    return found


class Section:
    """One table of config.toml (the root when names is empty; the index-th entry when
    names is an array of tables)."""

    def __init__(self, data: dict, path: str = "config.toml", names: tuple[str, ...] = (),
                 index: int | None = None):
        self.data, self.path, self.names, self.index = data, path, names, index

    def section(self, name: str) -> "Section":
        """The sub-table [name] (empty when absent); ConfigError when it is not a table."""
        return Section(self.get(name, dict, {}), self.path, (*self.names, name))

    def get(self, key: str, kind, default=None, of: type | None = None):
        """The value of key, checked to be of kind (a type or a tuple of types; float also
        takes an integer, and must be finite); a list's items of type `of`. default when
        the key is absent."""
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if _is(value, kinds) and (of is None or not isinstance(value, list)
                                  or all(_is(item, (of,)) for item in value)):
            return float(value) if kinds == (float,) else value
        what = " or ".join(_WHAT[k] for k in kinds)
        if of is not None:
            what += f" of {_WHAT[of].removeprefix('a ').removeprefix('an ')}s"
        raise self.error(key, f"expected {what}, got {value!r}")

    def entries(self, key: str) -> list["Section"]:
        """The tables of the array [[names.key]] (ENTRIES gives their keys), each a Section
        whose errors name the line in its own entry."""
        return [Section(entry, self.path, (*self.names, key), n)
                for n, entry in enumerate(self.value(key))]

    def required(self, key: str):
        """value(key), which must be set: ConfigError naming the table when it is not."""
        found = self.value(key)
        if found is None:
            raise self.error(key, "missing (required)")
        return found

    def value(self, key: str):
        """The value of key, of the type and with the default SCHEMA gives it."""
        kind, fallback, of = schema_of(self.names)[key]
        return self.get(key, kind, fallback, of)

    def keys(self) -> list[str]:
        return list(self.data)

    def items(self) -> list[tuple[str, object]]:
        return list(self.data.items())

    def error(self, key: str, why: str) -> ConfigError:
        """A ConfigError '<path>:<line>: [table] key: why'."""
        where = f"[{'.'.join(self.names)}] {key}" if self.names else key
        if self.index is not None:
            where = f"[[{'.'.join(self.names)}]] #{self.index + 1} {key}"
        line = _line_of(self.path, self.names, key, self.index)
        return ConfigError(f"{self.path}:{line}: {where}: {why}")


def _is(value, kinds: tuple) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, (int, float)):
        return math.isfinite(value)
    return isinstance(value, kinds)


_warned: set[str] = set()  # the files whose unknown keys this process reported


def of(home) -> Section:
    """The whole of the mesh's config.toml ({} when absent); the first time in a process,
    a warning on stderr for each key the schema does not know."""
    settings = Section(home.config, home.config_file)
    if settings.path not in _warned:
        _warned.add(settings.path)
        for names, key in unknown(settings.data):
            where = Section({}, settings.path, names).error(key, "unknown key, ignored")
            program = os.path.basename(sys.argv[0])  # as cli.prog_name() names it
            sys.stderr.write(f"{program}: warning: {where}{_known(names)}\n")
    return settings


def _known(names: tuple[str, ...]) -> str:
    try:
        return f" (known: {', '.join(sorted(schema_of(names)))})"
    except KeyError:
        return f" (known: {', '.join(sorted([*SCHEMA, *TABLES]))})"


def section(home, name: str) -> Section:
    return of(home).section(name)


def value(home, section_name: str, key: str):
    """[section_name] key of the mesh's config.toml, typed and defaulted by SCHEMA."""
    return section(home, section_name).value(key)


def _line_of(path: str, names: tuple[str, ...], key: str, nth: int | None = None) -> int:
    """The line that sets key inside [names] (found by scanning the text: cheap, and only
    on the error path); the table's header, else 1, when it cannot be found. For an array
    of tables [[names]]: in its nth entry, or, nth None, the first entry that sets key."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return 1
    header = re.compile(r"\s*\[\[?\s*" + r"\s*\.\s*".join(
        r'"?' + re.escape(n) + r'"?' for n in names) + r"\s*\]")
    setting = re.compile(r'\s*"?' + re.escape(key) + r'"?\s*=')
    if not names:
        for n, line in enumerate(lines):
            if line.lstrip().startswith("["):
                break  # the first table: the root ends here
            if setting.match(line):
                return n + 1
        table = re.compile(r'\s*\[\[?\s*"?' + re.escape(key) + r'"?\s*[\].]')  # a table
        return next((n + 1 for n, line in enumerate(lines) if table.match(line)), 1)
    starts = [n for n, line in enumerate(lines) if header.match(line)]
    if nth is not None:
        starts = starts[nth:nth + 1]
    for start in starts:
        for n in range(start + 1, len(lines)):
            if lines[n].lstrip().startswith("["):
                break  # the next table: the key is not set in this one
            if setting.match(lines[n]):
                return n + 1
    return starts[0] + 1 if starts else 1
