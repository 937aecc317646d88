"""What every agent executor shares (claude and the plain-text ones): the command a config
table names, the prompt with peers' messages ahead of the task, the child's environment and
the missing-CLI check."""

import os
import shlex
import shutil

from ..core import config
from ..core.errors import Unavailable

MISSING = ("{name}: command not found (install Claude Code or set [agent] command in "
           "config.toml)")


# --- pure pieces ----------------------------------------------------------------------------

def command_list(table: config.Section) -> list[str]:
    """The table's command: a shell-split string or a list, non-empty, of strings; else a
    ConfigError naming file, line and key (an unclosed quote included)."""
    command = table.value("command")
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as e:
            raise table.error("command", f"cannot split {command!r} ({e})") from None
    if not command or not all(isinstance(p, str) and p for p in command):
        raise table.error("command", f"must be a non-empty list of strings, got {command!r}")
    return list(command)


def compose_prompt(messages: list[dict], prompt: str) -> str:
    """Peers' messages reach the agent at its next start, ahead of the task."""
    if not messages:
        return prompt
    lines = ["Messages from your peers:"]
    for m in messages:
        body = m.get("body")
        if body is None:
            import json

            body = json.dumps(m.get("data"), ensure_ascii=False)
        lines.append(f"- from {m.get('from', '?')}: " + str(body).replace("\n", "\n  "))
    return "\n".join(lines) + "\n\nTask:\n" + prompt


# --- I/O edges -------------------------------------------------------------------------------

def find_executable(command: list[str], env: dict) -> str:
    """The executable's path, or Unavailable (exit 69)."""
    found = shutil.which(command[0], path=env.get("PATH"))
    if not found:
        raise Unavailable(MISSING.format(name=command[0]))
    return found


def take_messages(home, session: str | None) -> list[dict]:
    """The session's unread messages, claimed (new/ -> cur/) so each is delivered once."""
    if home is None or not session:
        return []
    from ..coord import inbox

    return list(inbox.receive(home, session))


def child_env(role_name: str, session: str | None, base=os.environ) -> dict:
    env = dict(base)
    env["MESH_ROLE"] = role_name
    if session:
        env["MESH_SESSION"] = session
    env.pop("CLAUDECODE", None)  # a mesh agent is its own session, not a nested one
    return env
