"""What a Claude Code tool call will write: the pure half of the lock gate (`check --hook`).

The gate allows only what it can prove, so everything here answers "cannot tell" with
BadInput (a deny), never with an empty answer. Shapes: CLAUDE-CLI.md, "Hooks".
"""

import json
import os
import re
from typing import NamedTuple

from ..core.errors import BadInput

# Each write tool and the key its path must be under (Claude Code's own schemas).
WRITE_TOOLS = {"Edit": "file_path", "Write": "file_path", "MultiEdit": "file_path",
               "NotebookEdit": "notebook_path"}
# Tools that change no file: allowed whatever their input says.
READ_TOOLS = frozenset({"Read", "Grep", "Glob", "LS", "NotebookRead", "WebFetch", "WebSearch",
                        "TodoWrite", "TodoRead", "Task", "Agent", "BashOutput", "KillShell",
                        "KillBash", "ExitPlanMode", "ListMcpResourcesTool",
                        "ReadMcpResourceTool"})
_PATH_KEY = re.compile(r"(?i)(path|paths|file|files|filename|dir|directory|dest|destination"
                       r"|target|output|dst)$")
# Tool names are exact: `bash` or `WRITE` is no tool Claude Code knows, so not the one we know.
_KNOWN = {name.casefold(): name for name in (*WRITE_TOOLS, *READ_TOOLS, "Bash")}


class Call(NamedTuple):
    tool: str
    input: dict
    cwd: str | None


def parse_call(text: str) -> Call:
    """The hook's stdin as a Call; BadInput for anything that is not a well-formed call."""
    try:
        call = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
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


def write_paths(call: Call) -> list[str]:
    """Every path the call may write ([] for a tool that writes nothing). A write tool must
    name its path under its own key; every path-like key anywhere in its input counts too,
    so a second path beside the first is never waved through. A tool we do not know (an MCP
    tool) may write under any key: every value that looks like a path counts as well."""
    known = _KNOWN.get(call.tool.casefold())
    if known is not None and known != call.tool:
        raise BadInput(f"{call.tool!r} is no tool (did you mean {known}?)")
    if call.tool in READ_TOOLS or call.tool == "Bash":
        return []
    paths = _path_values(call.input, looks=call.tool not in WRITE_TOOLS)
    required = WRITE_TOOLS.get(call.tool)
    if required is not None and not isinstance(call.input.get(required), str):
        raise BadInput(f"{call.tool} without a {required}")
    return paths


def _path_values(value, key: str = "", looks: bool = False) -> list[str]:
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _path_values(v, k, looks)
    elif isinstance(value, list):
        for item in value:
            found += _path_values(item, key, looks)
    elif _PATH_KEY.search(key):
        if not isinstance(value, str) or not value or "\0" in value:
            raise BadInput(f"{key}: {value!r} is not a path")
        found.append(value)
    elif looks and isinstance(value, str) and _looks_like_path(value):
        found.append(value)
    return found


def _looks_like_path(value: str) -> bool:
    return (value.startswith(("/", "~", "./", "../", "file:")) or "/../" in value
            or "\0" in value)


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


# --- Bash, for the read-only roles: a best-effort recognizer of writes -----------------

_REDIRECTS = frozenset({">", ">>", ">|", "&>", "&>>", ">&", "<>"})
_HARMLESS_TARGETS = re.compile(r"/dev/(null|stdout|stderr|tty|fd/\d+)$|\d+$|-$")
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "(", ")", ";;", "|&"})
_WRITERS = frozenset({"rm", "rmdir", "mv", "cp", "tee", "touch", "mkdir", "ln", "chmod",
                      "chown", "chgrp", "truncate", "dd", "install", "rsync", "shred",
                      "unlink", "patch", "mktemp"})
_WRAPPERS = frozenset({"sudo", "env", "nohup", "time", "command", "builtin", "exec", "nice",
                       "xargs", "doas", "timeout", "stdbuf"})
_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh"})
_GIT_WRITES = frozenset({"commit", "push", "add", "rm", "mv", "reset", "checkout", "switch",
                         "restore", "merge", "rebase", "cherry-pick", "revert", "apply", "am",
                         "stash", "clean", "pull", "tag", "init", "clone", "worktree",
                         "update-ref", "gc", "prune", "notes", "replace", "filter-branch"})


def bash_writes(command) -> str | None:
    """What in a Bash command line writes a file (None: nothing it can recognise).
    It cannot see writes made by programs themselves (make, cargo, npm, python -c, an
    editor), through variables, aliases, functions, `$(...)` or `eval`."""
    if not isinstance(command, str):
        raise BadInput("Bash without a command")
    import shlex  # only the Bash calls of read-only roles pay for it

    lexer = shlex.shlex(command.replace("\n", " ; "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as e:
        raise BadInput(f"cannot parse the command line ({e})")
    for n, token in enumerate(tokens):
        if token in _REDIRECTS:
            target = tokens[n + 1] if n + 1 < len(tokens) else ""
            if not _HARMLESS_TARGETS.match(target):
                return f"it redirects output into {target or 'a file'}"
    for words in _simple_commands(tokens):
        why = _command_writes(words)
        if why:
            return why
    return None


def _simple_commands(tokens: list[str]) -> list[list[str]]:
    commands, words, skip = [], [], False
    for token in tokens:
        if skip:
            skip = False
        elif token in _SEPARATORS:
            commands.append(words)
            words = []
        elif token in _REDIRECTS or token in ("<", "<<", "<<<"):
            skip = True  # the redirection's target is no argument
        else:
            words.append(token)
    commands.append(words)
    return [w for w in commands if w]


def _command_writes(words: list[str]) -> str | None:
    while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]  # variable assignments
    if not words:
        return None
    program, args = os.path.basename(words[0]), words[1:]
    if program in _WRAPPERS:  # sudo -u x rm ...: any later word may be the command
        return next(filter(None, (_command_writes(args[n:]) for n in range(len(args)))), None)
    if program in _WRITERS:
        return f"`{program}` changes files"
    if program in ("sed", "perl") and any(re.match(r"-[nEsrlpa]*i|--in-place", a)
                                          for a in args):
        return f"`{program} -i` edits files in place"
    if program == "git":
        sub = _git_subcommand(args)
        if sub in _GIT_WRITES:
            return f"`git {sub}` changes the repository"
    if program in _SHELLS and "-c" in args[:-1]:
        return bash_writes(args[args.index("-c") + 1])
    return None


def _git_subcommand(args: list[str]) -> str | None:
    n = 0
    while n < len(args) and args[n].startswith("-"):
        n += 2 if args[n] in ("-C", "-c", "--git-dir", "--work-tree", "--namespace") else 1
    return args[n] if n < len(args) else None
