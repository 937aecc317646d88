"""config.toml through one typed accessor, so a value of the wrong type is a configuration
error (78) that names the file, line and key, not a crash (70) where the value is used.

    coord = config.section(home, "coord")
    stale = coord.get("stale_after", float, 60.0)    # an int is fine, "abc" is not

tomllib stays out of start-up: MeshHome.config parses the file on first use.
"""

import math
import re

from .errors import ConfigError

_WHAT = {float: "a number", int: "an integer", str: "a string", bool: "true or false",
         list: "a list", dict: "a table"}


class Section:
    """One table of config.toml (the root when names is empty)."""

    def __init__(self, data: dict, path: str = "config.toml", names: tuple[str, ...] = ()):
        self.data, self.path, self.names = data, path, names

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

    def keys(self) -> list[str]:
        return list(self.data)

    def items(self) -> list[tuple[str, object]]:
        return list(self.data.items())

    def error(self, key: str, why: str) -> ConfigError:
        """A ConfigError '<path>:<line>: [table] key: why'."""
        where = f"[{'.'.join(self.names)}] {key}" if self.names else key
        return ConfigError(f"{self.path}:{_line_of(self.path, self.names, key)}: {where}: {why}")


def _is(value, kinds: tuple) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, (int, float)):
        return math.isfinite(value)
    return isinstance(value, kinds)


def of(home) -> Section:
    """The whole of the mesh's config.toml ({} when absent)."""
    return Section(home.config, home.config_file)


def section(home, name: str) -> Section:
    return of(home).section(name)


def _line_of(path: str, names: tuple[str, ...], key: str) -> int:
    """The line that sets key inside [names] (found by scanning the text: cheap, and only
    on the error path); the table's header, else 1, when it cannot be found."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return 1
    header = re.compile(r"\s*\[\[?\s*" + r"\s*\.\s*".join(
        r'"?' + re.escape(n) + r'"?' for n in names) + r"\s*\]")
    setting = re.compile(r'\s*"?' + re.escape(key) + r'"?\s*=')
    start, found_header = 0, not names
    for n, line in enumerate(lines):
        if names and header.match(line):
            start, found_header = n, True
            break
    for n in range(start + (1 if names else 0), len(lines)):
        if lines[n].lstrip().startswith("["):
            break  # the next table: the key is not set in this one
        if setting.match(lines[n]):
            return n + 1
    return start + 1 if found_header else 1
