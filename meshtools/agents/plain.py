"""Plain-text agent CLIs (aider, ollama, ...) configured as `[agents.NAME]` in config.toml:
the exit code decides ok/failed, the output is captured as it is.

`{prompt}` in an argument of the command is replaced by the prompt; a command without the
placeholder gets the prompt on stdin.
"""

import subprocess
import time

from ..core.errors import Unavailable
from ..queue.executor import Outcome, kill_group
from .adapter import OUTPUT_TAIL, child_env, compose_prompt, find_executable, take_messages

PLACEHOLDER = "{prompt}"


def text_argv(command: list[str], prompt: str) -> tuple[list[str], bool]:
    """(argv, whether the prompt goes on stdin). Pure."""
    if any(PLACEHOLDER in part for part in command):
        return [part.replace(PLACEHOLDER, prompt) for part in command], False
    return list(command), True


class TextExecutor:
    def __init__(self, name: str, command: list[str], *, home=None, session=None, role=None):
        self.name = name
        self.command = list(command)
        self.home = home
        self.session = session
        self.env = child_env(role or name, session)
        self._child: subprocess.Popen | None = None

    def check(self) -> str:
        found = find_executable(self.command, self.env)
        return found

    def run(self, task, workdir, timeout, on_start=lambda pid: None) -> Outcome:
        started = time.monotonic()
        self.check()
        prompt = compose_prompt(take_messages(self.home, self.session), task["prompt"])
        argv, on_stdin = text_argv(self.command, prompt)
        try:
            child = subprocess.Popen(argv, cwd=workdir, env=self.env,
                                     stdin=subprocess.PIPE if on_stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        except FileNotFoundError:
            raise Unavailable(f"{self.command[0]}: command not found (see [agents.{self.name}] "
                              "in config.toml)")
        self._child = child
        on_start(child.pid)
        try:
            out, _ = child.communicate(prompt.encode() if on_stdin else None, timeout=timeout)
            status = "ok" if child.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            kill_group(child)
            out, _ = child.communicate()
            status = "timeout"
        finally:
            self._child = None
        text = out.decode("utf-8", "replace")[-OUTPUT_TAIL:]
        return Outcome(status, child.returncode, text, time.monotonic() - started,
                       {"agent": self.name})

    def interrupt(self) -> None:
        if self._child is not None:
            kill_group(self._child)
