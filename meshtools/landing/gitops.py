"""Run git the way an unattended mesh needs: never prompting, never opening an editor.

Every git call of the mesh goes through `run`, so that a credential prompt or an
editor can never hang an anchor loop, messages are in English (LC_ALL=C) where we parse them,
and a failure becomes one line (git's own first line of stderr) and an exit code instead of
a traceback. Hooks stay as the repository configured them: core.hooksPath is left alone.

Commits made on the mesh's behalf (cherry-pick) need an identity. A repository or user that
has one keeps it; only where `user.email` (or `user.name`) is unset does `identity_args` fill
in "meshtools <meshtools@localhost>", so picks work on a fresh CI box without touching config.

Reading .git files directly (meshtools.core.git) stays the fast path for "which worktree,
which branch"; this module is for what needs git itself.
"""

import os
import subprocess
from typing import NamedTuple

from ..core import errors, git as gitfiles
from ..core.config import Section

ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_EDITOR": "true", "GIT_SEQUENCE_EDITOR": "true",
       "LC_ALL": "C"}
FALLBACK_NAME = "meshtools"
FALLBACK_EMAIL = "meshtools@localhost"


class GitError(errors.MeshError):
    """git said no. The message is git's first line of stderr; `result` has the rest."""

    def __init__(self, message: str, result: subprocess.CompletedProcess | None = None,
                 exit_code: int | None = None):
        super().__init__(message)
        self.result = result
        if exit_code is not None:
            self.exit_code = exit_code


def environment(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(ENV)
    env.update(extra or {})
    return env


def first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def run(cwd, *args: str, check: bool = True, config: list[str] | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """`git [-c k=v...] ARGS` in cwd, text out, with env's variables added. On failure
    raise GitError (exit 70) with git's first stderr line, unless check=False."""
    argv = ["git", *(config or []), *args]
    try:
        result = subprocess.run(argv, cwd=os.fspath(cwd), env=environment(env), text=True,
                                capture_output=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise errors.Unavailable("git is not installed (or not on PATH)")
    if check and result.returncode != 0:
        raise failure(result, f"git {args[0] if args else ''}")
    return result


def failure(result: subprocess.CompletedProcess, what: str,
            exit_code: int | None = None) -> "GitError":
    """The error for a failed git run: `what: git's first line of complaint`."""
    line = first_line(result.stderr) or first_line(result.stdout) or \
        f"exit status {result.returncode}"
    line = line.removeprefix("fatal: ").removeprefix("error: ")
    return GitError(f"{what}: {line}", result, exit_code)


def out(cwd, *args: str, **kw) -> str:
    """git's stdout, stripped of the final newline."""
    return run(cwd, *args, **kw).stdout.rstrip("\n")


def lines(cwd, *args: str, **kw) -> list[str]:
    text = out(cwd, *args, **kw)
    return [line for line in text.splitlines() if line]


def ok(cwd, *args: str) -> bool:
    """True when git exits 0 (a question: does this ref exist, is this an ancestor...)."""
    return run(cwd, *args, check=False).returncode == 0


def identity_args(cwd) -> list[str]:
    """`-c user.name=... -c user.email=...` for whichever of the two git has no value for."""
    extra = []
    if not out(cwd, "config", "user.name", check=False):
        extra += ["-c", f"user.name={FALLBACK_NAME}"]
    if not out(cwd, "config", "user.email", check=False):
        extra += ["-c", f"user.email={FALLBACK_EMAIL}"]
    return extra


def commit_of(cwd, rev: str, what: str = "commit") -> str:
    """The full sha of rev as a commit; BadInput (65) when there is no such commit."""
    if not rev or rev.startswith("-"):
        raise errors.BadInput(f"invalid {what} {rev!r}")
    result = run(cwd, "rev-parse", "--verify", "--quiet", "--end-of-options",
                 f"{rev}^{{commit}}", check=False)
    if result.returncode != 0:
        raise errors.BadInput(f"no such {what}: {rev}")
    return result.stdout.strip()


def has_branch(cwd, branch: str) -> bool:
    return ok(cwd, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")


def main_checkout(path) -> str:
    """The main worktree of the repository around path, even from inside a linked worktree
    (the anchor lands work there, never in a worker's checkout)."""
    found = gitfiles.find_worktree(os.fspath(path))
    if found is None:
        raise errors.ConfigError(f"{path} is not inside a git repository")
    root = gitfiles.main_root(found.common_dir)
    if gitfiles.worktree_at(root) is None:
        raise errors.ConfigError(f"cannot find the main checkout of {found.root} "
                                 f"(bare repository or separate git dir?)")
    return root


class Main(NamedTuple):
    """The main checkout and the branch work lands on: resolved once (main_of) per command
    and passed down, never looked up again by the code it calls."""
    root: str
    branch: str


def main_of(path, settings: Section | None = None) -> Main:
    """The main checkout of the repository around path and its main branch: [worktrees] main
    (settings: config.of(home)), else `main` if it exists, else the branch the main checkout
    has checked out. ConfigError (78) when none of these names a branch."""
    root = main_checkout(path)
    configured = settings.section("worktrees").value("main") if settings else None
    if configured is not None:
        if not has_branch(root, configured):
            raise errors.ConfigError(f"config [worktrees] main = {configured!r}: no such branch")
        return Main(root, configured)
    if has_branch(root, "main"):
        return Main(root, "main")
    checkout = gitfiles.worktree_at(root)
    branch = gitfiles.current_branch(checkout) if checkout else None
    if branch and has_branch(root, branch):
        return Main(root, branch)
    raise errors.ConfigError("cannot tell the main branch: no `main`, and the main checkout "
                             "is detached (set [worktrees] main in config.toml)")


def status_lines(cwd, untracked: bool = True) -> list[str]:
    """`git status --porcelain` lines: one per changed path (untracked too unless told)."""
    args = ["status", "--porcelain"]
    if not untracked:
        args.append("--untracked-files=no")
    return lines(cwd, *args)
