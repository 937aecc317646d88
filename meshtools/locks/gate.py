"""What a Claude Code tool call will write: the pure half of the lock gate (`check --hook`).

The gate allows only what it can prove, so everything here answers "cannot tell" with
BadInput (a deny), never with an empty answer. Shapes: CLAUDE-CLI.md, "Hooks". The work
is bounded (MAX_INPUT_BYTES, MAX_VALUES, MAX_PATHS, each distinct path once): a hook that
outlives its timeout lets the call through, so a huge input is refused, never slowly walked.
"""

import json
import os
import re
from typing import Callable, NamedTuple
from urllib.parse import unquote, urlsplit

from ..core.errors import BadInput

# Claude Code's model writes at most some 100k tokens per turn: a tool call bigger than
# this is no honest one, and refusing it keeps the gate far inside its hook timeout.
MAX_INPUT_BYTES = 1 << 20
MAX_PATHS = 256  # distinct paths one call may write; each costs a resolution
MAX_VALUES = 20_000  # JSON values in one tool_input: the walk over them is bounded too

# Each write tool and the key its path must be under (Claude Code's own schemas).
WRITE_TOOLS = {"Edit": "file_path", "Write": "file_path", "MultiEdit": "file_path",
               "NotebookEdit": "notebook_path"}
# Tools that change no file: allowed whatever their input says. Task/Agent start a
# subagent whose own tool calls pass this gate; StructuredOutput is a run's answer
# (`--json-schema`), which the CLI adds whatever `--tools` says.
READ_TOOLS = frozenset({"Read", "Grep", "Glob", "LS", "NotebookRead", "WebFetch", "WebSearch",
                        "TodoWrite", "TodoRead", "Task", "Agent", "BashOutput", "KillShell",
                        "KillBash", "ExitPlanMode", "ListMcpResourcesTool",
                        "ReadMcpResourceTool", "StructuredOutput"})
ALWAYS = frozenset({"StructuredOutput"})  # exists whatever a role's `tools` list says
MCP_PREFIX = "mcp__"
ALIASES = {"Task": "Agent", "Agent": "Task"}  # system/init says Task, the API says Agent
_PATH_KEYS = ("path", "paths", "file", "files", "filename", "dir", "directory", "dest",
              "destination", "target", "output", "dst")  # how a path's key ends
# Tool names are exact: `bash` or `WRITE` is no tool Claude Code knows, so not the one we know.
_KNOWN = {name.casefold(): name for name in (*WRITE_TOOLS, *READ_TOOLS, "Bash")}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_SPACE = re.compile(r"\s")
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")


class Call(NamedTuple):
    tool: str
    input: dict
    cwd: str | None


def parse_call(data: bytes | str) -> Call:
    """The hook's stdin as a Call; BadInput for anything that is not a well-formed call,
    and for an input over MAX_INPUT_BYTES (read at most one byte more than that)."""
    if len(data) > MAX_INPUT_BYTES:
        raise BadInput(f"hook input is over {MAX_INPUT_BYTES >> 20} MiB: no honest tool call "
                       "is that big (write it in smaller pieces)")
    try:
        call = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise BadInput("hook input is not JSON")
    if not isinstance(call, dict):
        raise BadInput("hook input is not a JSON object")
    tool, tool_input, cwd = call.get("tool_name"), call.get("tool_input"), call.get("cwd")
    if not isinstance(tool, str) or not tool:
        raise BadInput("hook input has no tool_name")
    if not isinstance(tool_input, dict):
        raise BadInput(f"{tool}: tool_input is not a JSON object")
    if cwd is not None and (not isinstance(cwd, str) or not os.path.isabs(cwd)):
        raise BadInput("hook input has a cwd that is not an absolute path")
    return Call(tool, tool_input, cwd)


def tool_refusal(tool: str, role_tools, read_only: bool) -> str | None:
    """Why a role may not call tool at all (None: it may, subject to the path checks).
    role_tools: the role's `tools` list (`--tools`, so the CLI offers nothing else); a tool
    outside it should not exist (MCP tools come from the MCP config, not `--tools`). A tool
    this gate does not know (an MCP tool, a tool a CLI release added) may write anything,
    which a role that writes nothing must not."""
    if tool in ALWAYS:
        return None
    listed = bool(role_tools) and (tool in role_tools or ALIASES.get(tool) in role_tools)
    if role_tools is not None and not tool.startswith(MCP_PREFIX) and not listed:
        return f"{tool} is not one of the role's tools ({', '.join(role_tools) or 'none'})"
    if read_only and tool not in READ_TOOLS and tool not in WRITE_TOOLS and tool != "Bash":
        return f"{tool} is a tool the gate does not know, and the role writes nothing"
    return None


def write_paths(call: Call, exists: Callable[[str], bool] = lambda path: False) -> list[str]:
    """Every distinct path the call may write ([] for a tool that writes nothing). A write
    tool must name its path under its own key; every path-like key anywhere in its input
    counts too, so a second path beside the first is never waved through. A tool we do not
    know (an MCP tool) may write under any key: every value that looks like a path counts as
    well (see looks_like_path; exists(relative path) says whether it names something there).
    A file: URI counts as its path, and a value with space around it as both spellings."""
    known = _KNOWN.get(call.tool.casefold())
    if known is not None and known != call.tool:
        raise BadInput(f"{call.tool!r} is no tool (did you mean {known}?)")
    if call.tool in READ_TOOLS or call.tool == "Bash":
        return []
    required = WRITE_TOOLS.get(call.tool)
    if required is not None and not isinstance(call.input.get(required), str):
        raise BadInput(f"{call.tool} without a {required}")
    found: dict[str, None] = {}  # insertion-ordered set: each distinct value checked once
    looks, seen = call.tool not in WRITE_TOOLS, set()
    for key, value in _leaves(call.input):
        if key.casefold().endswith(_PATH_KEYS):
            if not isinstance(value, str) or not value or "\0" in value:
                raise BadInput(f"{key}: {value!r} is not a path")
            _add(value, found)
        elif looks and isinstance(value, str) and value not in seen:
            seen.add(value)
            if looks_like_path(value, exists):
                _add(value, found)
    return list(found)


def _leaves(tree: dict):
    """(key, value) of every value that is no object or array, under the key it is in (an
    array's items under the array's key), breadth first; at most MAX_VALUES of them."""
    from collections import deque

    queue, count = deque([("", tree)]), 0
    while queue:
        key, value = queue.popleft()
        count += 1
        if count > MAX_VALUES:
            raise BadInput(f"tool_input has more than {MAX_VALUES} values: no honest tool call "
                           "has that many")
        if isinstance(value, dict):
            queue.extend(value.items())
        elif isinstance(value, list):
            queue.extend((key, item) for item in value)
        else:
            yield key, value


def _add(value: str, found: dict) -> None:
    for path in _spellings(value):
        if path not in found:
            if len(found) >= MAX_PATHS:
                raise BadInput(f"the call names more than {MAX_PATHS} paths; the gate checks "
                               "at most that many in one call")
            found[path] = None


def _spellings(value: str) -> list[str]:
    """The paths a value may mean: itself, without the space around it, a file: URI's path
    (any case of the scheme), and ~ expanded."""
    out = [value]
    stripped = value.strip()
    if stripped and stripped != value:
        out.append(stripped)
    match = _SCHEME.match(stripped)
    if match and match[1].lower() == "file":
        out.append(file_uri_path(stripped))
    elif stripped.startswith("~"):
        out.append(os.path.expanduser(stripped))
    return out


def file_uri_path(uri: str) -> str:
    """The local path of a file: URI; BadInput for one on another host."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise BadInput(f"{uri}: a file URI on another host")
    path = unquote(parts.path)
    if not path or "\0" in path:
        raise BadInput(f"{uri}: not a path")
    return path


def looks_like_path(value: str, exists: Callable[[str], bool]) -> bool:
    """Whether a value of an unknown tool may name a file: (space around it ignored) a file:
    URI; an absolute, home, ./ or ../ path, or one with a .. part; a relative name without
    space whose first part exists (`crates/cli/x.rs`, `README.md`), or with a slash and a
    file extension (`new/x.rs`). Not: text with spaces, other URLs (https:, mailto:),
    `owner/repo` or `feature/x` where nothing of that name exists."""
    text = value.strip()
    if not text:
        return False
    if "\0" in text:
        return True
    if ":" in text:
        scheme = _SCHEME.match(text)
        if scheme:
            return scheme[1].lower() == "file"
    if (text[0] in "/~" or text.startswith(("./", "../")) or text in (".", "..")
            or "/../" in text or text.endswith("/..")):
        return True
    if len(text) > 4096 or _SPACE.search(text):
        return False
    if "/" in text:
        return bool(_EXTENSION.search(text)) or exists(text.split("/", 1)[0])
    return exists(text)


def anchored(path: str, cwd: str) -> str:
    """The path a tool call writes: relative to the call's own cwd, never to the repository
    (a relative path from a cwd outside it writes outside it)."""
    return os.path.join(cwd, path)


def hard_linked(path: str) -> bool:
    """A file with a second name: writing it writes that name too, wherever it is."""
    import stat

    try:
        st = os.stat(path)
    except OSError:
        return False  # nothing there yet (or unreachable: resolving it refuses)
    return stat.S_ISREG(st.st_mode) and st.st_nlink > 1
