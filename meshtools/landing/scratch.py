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

from . import gitops, state


def clear(home, root: str) -> None:
    """Remove the scratch worktree and its registration, whatever state it was left in."""
    where = state.scratch_path(home)
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
