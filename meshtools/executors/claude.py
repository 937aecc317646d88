"""The claude executor: runs a task through Claude Code headless (`claude -p`) as a queue
Executor, reading its stream-json live (folded by executors.stream).

    claude_argv(role, prompt)        the command line (pure)
    agent_command(settings, environ) which executable plays `claude` (pure)
    ClaudeExecutor(role, ...)        run(task, workdir, timeout) -> Outcome; interrupt()

executors.choose picks this one or another by agent name; executors.base holds the pieces
it shares with the plain-text executors.

The prompt goes on stdin: the CLI's tool options are variadic (`--disallowedTools A B`
would swallow a prompt argument after them), and every valued option is passed as
`--opt=VALUE` so a value can never be read as a flag. Headless runs cannot answer a
permission prompt, so edits are accepted (`--permission-mode acceptEdits`) and the role's
tools pre-approved; the role's disallowed tools and the file-lock hook still deny.
A start-up watchdog kills a run that prints nothing (a known headless hang).
"""

import functools
import os
import queue as queues
import shlex
import subprocess
import time
import uuid

from ..core import config, events, jsonl, redact
from ..core.errors import Unavailable
from ..queue import limits
from ..queue.outcome import Outcome
from . import process
from .process import OUTPUT_TAIL, end_group
from . import stream, trace
from .base import (MISSING, child_env, command_list, compose_prompt, find_executable,
                   take_messages)

DEFAULT_COMMAND = ("claude",)
COMMAND_ENV = "MESH_AGENT_COMMAND"
STARTUP_TIMEOUT = 60.0
PREVIEW = 80
EDIT_TOOLS = ("Edit", "Write", "MultiEdit", "NotebookEdit")


# --- pure pieces ----------------------------------------------------------------------------

def agent_command(settings: config.Section, environ=os.environ) -> list[str]:
    """$MESH_AGENT_COMMAND (shell-split), else config.toml `[agent] command`, else claude."""
    if environ.get(COMMAND_ENV, "").strip():
        return shlex.split(environ[COMMAND_ENV])
    table = settings.section("agent")
    if table.value("command") is None:
        return list(DEFAULT_COMMAND)
    return command_list(table)


def pre_approved(role) -> list[str]:
    """What the run may use without a prompt: the role's tools (edits are covered by
    acceptEdits), or Bash for a role with every tool. Deny rules still win."""
    if role.tools is None:
        return ["Bash"]
    return [t for t in role.tools if t not in EDIT_TOOLS]


def claude_argv(role, prompt: str | None = None, command=DEFAULT_COMMAND,
                session_id: str | None = None, prompt_on_stdin: bool = True) -> list[str]:
    """The command line for one headless run of role. With prompt_on_stdin (the default)
    the prompt is not in argv: the caller writes it to stdin."""
    argv = [*command, "-p", "--output-format=stream-json", "--verbose",
            f"--model={role.model}", "--permission-mode=acceptEdits"]
    if session_id:
        argv.append(f"--session-id={session_id}")
    if role.tools is not None:
        argv.append("--tools=" + ",".join(role.tools))
    allowed = pre_approved(role)
    if allowed:
        argv.append("--allowedTools=" + ",".join(allowed))
    if role.disallowed_tools:
        argv.append("--disallowedTools=" + ",".join(role.disallowed_tools))
    if role.charter:
        argv.append("--append-system-prompt=" + role.charter)
    if role.max_budget_usd is not None:
        argv.append(f"--max-budget-usd={role.max_budget_usd:g}")
    if not prompt_on_stdin and prompt is not None:
        argv.extend(["--", prompt])
    return argv


def preview(text: str) -> str:
    """The prompt's first words for an event: redacted before it is cut, since a cut secret
    (`ghp_abc…`) no longer has the shape the event's own filter knows."""
    line = " ".join(redact.redact_text(text).split())
    return line if len(line) <= PREVIEW else line[:PREVIEW - 1] + "…"


# --- the executor ----------------------------------------------------------------------------

class ClaudeExecutor:
    """Executor for `--agent claude`. on_phase(phase) hears every phase change (starting,
    thinking, "tool NAME", done, failed): queue-drain and mesh-agent wire it to the
    registry heartbeat. Events go to the mesh's event log when home is given."""

    name = "claude"

    def __init__(self, role, *, home=None, session: str | None = None, command=None,
                 startup_timeout: float | None = None, on_phase=None):
        self.role = role
        self.home = home
        self.session = session
        self.command = list(command or agent_command(
            config.of(home) if home else config.Section({})))
        self.startup_timeout = startup_timeout or STARTUP_TIMEOUT
        self.on_phase = on_phase
        self.env = child_env(role.name, session)
        self._child: subprocess.Popen | None = None

    def check(self) -> str:
        """Fail early (exit 69) when the CLI is missing, before any task is taken."""
        return find_executable(self.command, self.env)

    def interrupt(self) -> None:
        """Stop the run; safe in a signal handler (see process.terminate)."""
        if self._child is not None:
            process.terminate(self._child)

    # --- one run ------------------------------------------------------------------------

    def run(self, task: dict, workdir: str, timeout: float | None,
            on_start=lambda pid: None) -> Outcome:
        """One run, its stream kept in the task's trace (executors.trace) line by line."""
        self.check()
        writer = trace.Writer.open(self.home, task, agent=self.name, session=self.session,
                                   role=self.role.name)
        return trace.traced(writer, lambda: self._run(task, workdir, timeout, on_start,
                                                      writer))

    def _run(self, task, workdir, timeout, on_start, writer) -> Outcome:
        started = time.monotonic()
        prompt = compose_prompt(take_messages(self.home, self.session), task["prompt"])
        argv = claude_argv(self.role, prompt, self.command, session_id=str(uuid.uuid4()))
        state, phases = stream.StreamState(), []
        try:
            child = process.start(argv, workdir, task, env=self.env, stdin=True,
                                   stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise Unavailable(MISSING.format(name=self.command[0]))
        except OSError as e:
            return Outcome("failed", None, f"cannot start {self.command[0]}: {e}",
                           time.monotonic() - started, {"agent": self.name, "error": "start"})
        self._child = child
        on_start(child.pid)
        self._phase(stream.STARTING, phases)
        announce = functools.partial(self._event, "agent.started", pid=child.pid,
                                     task=task.get("id"), prompt=preview(task["prompt"]))
        lines, err = queues.Queue(), process.Tail()
        process.PipeReader(child, child.stdout, process.LineSplitter(lines.put, ends=True))
        err_reader = process.PipeReader(child, child.stderr, err)
        process.feed(child, prompt.encode())
        reason = None
        try:
            reason = self._follow(child, lines, state, phases, started, timeout, writer,
                                  announce)
        finally:
            self._child = None
        return self._outcome(child, state, phases, reason, (err_reader, err), started)

    def _follow(self, child, lines, state, phases, started, timeout, writer,
                announce) -> str | None:
        """Feed stdout lines into state (and the trace) until their end (EOF, or soon after
        the process exited); 'startup_timeout' or 'timeout' if the watchdog or the task
        timeout killed the process group. announce(model=...) once the main loop's init
        says which model the role's alias resolved to (agent.started)."""
        seen_any = False
        deadline = None if not timeout else started + timeout
        startup = started + self.startup_timeout
        while True:
            limits = [d for d in (None if seen_any else startup, deadline) if d is not None]
            wait = max(0.0, min(limits) - time.monotonic()) if limits else None
            try:
                raw = lines.get(timeout=wait)
            except queues.Empty:
                now = time.monotonic()
                if not seen_any and now >= startup:
                    end_group(child)
                    return "startup_timeout"
                if deadline is not None and now >= deadline:
                    end_group(child)
                    return "timeout"
                continue
            if raw is None:
                return None
            seen_any = True
            line = jsonl.try_parse(raw)
            if line is None:  # not a stream-json line: a warning the CLI printed on stdout
                if writer is not None and raw.strip():
                    writer.output(raw)
                continue
            if writer is not None:
                writer.record(line)
            before, inits = state.phase, state.inits
            stream.feed(state, line)
            if inits == 0 and state.inits == 1:
                announce(model=state.model, claude_session=state.session_id)
            if state.phase != before:
                self._phase(state.phase, phases)

    def _outcome(self, child, state, phases, reason, err, started) -> Outcome:
        try:
            code = child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            end_group(child)
            code = child.wait()
        end_group(child)  # whatever it left behind in its group goes too
        reader, tail = err
        reader.join()  # at most process.DRAIN more: the child has exited
        stderr = tail.text()
        details = {"agent": self.name, "role": self.role.name, **stream.summary(state)}
        if reason == "timeout":
            status, kind = "timeout", "timeout"
        elif reason == "startup_timeout":
            status, kind = "failed", "startup_timeout"
        else:
            status, kind = stream.verdict(state, code)
        if reason:
            details["reason"] = reason
        if kind:
            details["error"] = kind
        details["phases"] = phases
        final = stream.DONE if status == "ok" else stream.FAILED
        if not phases or phases[-1] != final:
            self._phase(final, phases)
        output = state.result or "; ".join(state.errors) or stderr
        self._finished(status, kind, code, details, time.monotonic() - started)
        return Outcome(status, code, output[-OUTPUT_TAIL:], time.monotonic() - started,
                       details)

    # --- reporting ----------------------------------------------------------------------

    def _phase(self, phase: str, phases: list) -> None:
        phases.append(phase)
        if phase.startswith("tool "):
            self._event("agent.tool", tool=phase[5:])
        if self.on_phase:
            try:
                self.on_phase(phase)
            except Exception:  # noqa: BLE001 - a heartbeat hiccup never fails the run
                pass

    def _finished(self, status, kind, code, details, duration) -> None:
        common = {"status": status, "exit_code": code, "duration": round(duration, 3),
                  "cost_usd": details.get("cost_usd"), "turns": details.get("turns"),
                  "claude_session": details.get("session_id"), "model": details.get("model")}
        if status == "ok":
            self._event("agent.done", **common)
        elif limits.pauses_mesh(kind):
            self._event("agent.usage_limited", error=kind, resets_at=details.get("resets_at"),
                        **common)
        elif kind == limits.RATE_LIMIT:
            self._event("agent.rate_limited", error=kind, **common)
        else:
            self._event("agent.failed", error=kind, **common)

    def _event(self, name: str, **fields) -> None:
        if self.home is not None:
            events.emit(self.home, name, role=self.role.name, session=self.session, **fields)
