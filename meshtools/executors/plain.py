"""Plain-text agent CLIs (aider, ollama, ...) configured as `[agents.NAME]` in config.toml:
the exit code decides ok/failed, the output is captured as it is.

`{prompt}` in an argument of the command is replaced by the prompt; a command without the
placeholder gets the prompt on stdin.
"""

from ..core.errors import Unavailable
from ..queue.outcome import Outcome
from .process import CapturingExecutor
from .base import child_env, compose_prompt, find_executable, take_messages

PLACEHOLDER = "{prompt}"


def text_argv(command: list[str], prompt: str) -> tuple[list[str], bool]:
    """(argv, whether the prompt goes on stdin). Pure."""
    if any(PLACEHOLDER in part for part in command):
        return [part.replace(PLACEHOLDER, prompt) for part in command], False
    return list(command), True


class TextExecutor(CapturingExecutor):
    def __init__(self, name: str, command: list[str], *, home=None, session=None, role=None):
        super().__init__(home, session, role)
        self.name = name
        self.command = list(command)
        self.env = child_env(role or name, session)

    def check(self) -> str:
        return find_executable(self.command, self.env)

    def run(self, task, workdir, timeout, on_start=lambda pid: None) -> Outcome:
        self.check()
        prompt = compose_prompt(take_messages(self.home, self.session), task["prompt"])
        argv, on_stdin = text_argv(self.command, prompt)
        try:
            return self.capture(task, argv, workdir, timeout, on_start, env=self.env,
                                stdin_data=prompt.encode() if on_stdin else None,
                                details={"agent": self.name})
        except FileNotFoundError:
            raise Unavailable(f"{self.command[0]}: command not found (see [agents.{self.name}] "
                              "in config.toml)")
