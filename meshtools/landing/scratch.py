"""The scratch worktree a landing applies its candidates in and runs the gate in.

Nothing a landing does before its gate passes touches main or the user's checkout: the
candidates are cherry-picked onto main's tip in a detached worktree at
MESH_HOME/landing/scratch, and the gate runs there. One pass at a time uses it (the pick
lock), so it has one fixed place; whatever a killed pass left there (a half-done pick, its
registration, git's "initializing" lock) is removed by the next pass before it makes a
fresh one.
"""

import os
import shutil

from ..core import git
from . import gitops, state


def clear(home, root: str) -> None:
    """Remove the scratch worktree and its registration, whatever state it was left in."""
    where = state.scratch_path(home)
    forget_half_made(home, root)
    gitops.run(root, "worktree", "remove", "--force", "--force", where, check=False)
    shutil.rmtree(where, ignore_errors=True)
    gitops.run(root, "worktree", "unlock", where, check=False)  # a killed `add` locks it
    gitops.run(root, "worktree", "prune", check=False)


def fresh(home, root: str, commit: str) -> str:
    """A clean scratch worktree, detached at commit; its path."""
    clear(home, root)
    home.ensure(state.DIR)
    where = state.scratch_path(home)
    gitops.run(root, "worktree", "add", "-q", "--detach", where, commit)
    return os.path.realpath(where)


def forget_half_made(home, root: str) -> None:
    """A `worktree add` killed mid-write can leave a registration with an empty commondir,
    which every later `git worktree` command dies on (`worktree list` too: run this first).
    Only the one whose gitdir names our scratch is ours to remove: a worktree of the user's
    may share the name."""
    where = state.scratch_path(home)
    found = git.find_worktree(root)
    admin = os.path.join(found.common_dir, "worktrees") if found else None
    try:
        names = os.listdir(admin) if admin else []
    except FileNotFoundError:
        return
    ours = os.path.join(os.path.realpath(where), ".git")
    for name in names:
        entry = os.path.join(admin, name)
        target = git.read_file(os.path.join(entry, "gitdir"))
        common = git.read_file(os.path.join(entry, "commondir"))
        # a missing commondir git reads as "none"; an empty one is what it dies on
        if target and os.path.realpath(target) == ours and common == "":
            shutil.rmtree(entry, ignore_errors=True)
