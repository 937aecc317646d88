"""Choosing an executor: the one place that turns an agent name (`--agent NAME`) into an
executor and says which names exist: shell, claude, or a config.toml [agents.NAME].

The executors are imported only once chosen, so a shell worker never loads the claude one.
"""

from ..core import config
from ..core.errors import UsageError
from .base import command_list

BUILT_IN = ("shell", "claude")


def configured_agents(settings: config.Section) -> dict[str, dict]:
    """config.toml [agents.NAME] tables, checked: command (list), output text|stream-json."""
    tables = settings.section("agents")
    checked = {}
    for name in tables.keys():
        if name in BUILT_IN:
            raise tables.error(name, f"{name!r} is built in; pick another name")
        table = tables.section(name)
        command = command_list(table)
        output = table.value("output")
        if output not in ("text", "stream-json"):
            raise table.error("output", "must be \"text\" or \"stream-json\"")
        checked[name] = {"command": command, "output": output}
    return checked


def known_agents(settings: config.Section) -> list[str]:
    return [*BUILT_IN, *sorted(configured_agents(settings))]


def validate_agent(settings: config.Section, name: str, *, shell: bool = True) -> str:
    """name when it names an agent (shell only where a shell command is a task, not a
    prompt); else UsageError (64) listing those that do."""
    known = [a for a in known_agents(settings) if shell or a != "shell"]
    if name not in known:
        raise UsageError(f"unknown agent {name!r} (agents: {', '.join(known)})")
    return name


def make_executor(name: str, *, home, role=None, session: str | None = None,
                  startup_timeout: float | None = None, on_phase=None):
    """The executor `--agent NAME` names; UsageError (64) naming the known ones. A bad
    $MESH_TRACE_MAX_BYTES is a ConfigError (78) here, before any task is taken."""
    from .trace import max_bytes

    max_bytes()
    settings = config.of(home) if home is not None else config.Section({})
    if name == "shell":
        from .process import ShellExecutor

        return ShellExecutor(home, session, role.name if role else None)
    spec = configured_agents(settings).get(validate_agent(settings, name))
    if spec and spec["output"] == "text":
        from .plain import TextExecutor

        return TextExecutor(name, spec["command"], home=home, session=session,
                            role=role.name if role else None)
    if role is None:
        raise UsageError(f"--agent {name} needs a role: give --role ROLE")
    from .claude import ClaudeExecutor

    return ClaudeExecutor(role, home=home, session=session,
                          command=spec["command"] if spec else None,
                          startup_timeout=startup_timeout, on_phase=on_phase)


def heartbeat_phase(home, session: str | None):
    """on_phase for a registered session: its registry phase follows the agent's (and each
    change is a session.phase event). The caller swallows errors: an unregistered session
    is simply not watched."""
    if not session:
        return None
    from ..coord.sessions import beat

    return lambda phase: beat(home, session, phase)
