"""Find a path's git worktree and the repository's common git dir without running git.

Reading .git files directly costs microseconds; `git rev-parse` costs a process, which the
lock gate and every pipe stage would pay.
"""

import os
from typing import NamedTuple


class Worktree(NamedTuple):
    root: str  # the worktree's top directory
    git_dir: str  # its own git dir (.git, or .git/worktrees/NAME for a linked worktree)
    common_dir: str  # the repository's shared git dir, the same for every worktree


def read_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def worktree_at(root: str) -> Worktree | None:
    """The worktree whose top directory is root, if root holds a .git."""
    dotgit = os.path.join(root, ".git")
    if os.path.isdir(dotgit):
        return Worktree(root, dotgit, dotgit)
    text = read_file(dotgit)
    if not text or not text.startswith("gitdir:"):
        return None
    git_dir = os.path.normpath(os.path.join(root, text[len("gitdir:"):].strip()))
    common = read_file(os.path.join(git_dir, "commondir"))
    common_dir = os.path.normpath(os.path.join(git_dir, common)) if common else git_dir
    return Worktree(root, git_dir, common_dir)


def find_worktree(path: str) -> Worktree | None:
    """The innermost worktree that contains path (which need not exist yet)."""
    current = os.path.realpath(path)
    while True:
        if os.path.isdir(current):
            found = worktree_at(current)
            if found:
                return found
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def main_root(common_dir: str) -> str:
    """The main worktree of a non-bare repository: the parent of its common git dir."""
    return os.path.dirname(common_dir)


def current_branch(worktree: Worktree) -> str | None:
    """The checked-out branch, or the first 12 hex digits of a detached HEAD."""
    head = read_file(os.path.join(worktree.git_dir, "HEAD"))
    if not head:
        return None
    if head.startswith("ref:"):
        return head[4:].strip().removeprefix("refs/heads/")
    return head[:12]
