"""One git worktree per agent role, on its own branch, beside the repository.

`ensure(role)` makes <root>/<repo>-wt-<role>/ on branch mesh/<role>, started from the main
branch, so that ~/projects/reverie gets ~/projects/reverie-wt-builder/. Worktrees (rather
than clones) share one object store and one ref namespace: the anchor can cherry-pick a
worker's commits without fetching, and the mesh's default home (in the common git dir) is
the same from every worktree.

The root is --root, else config.toml [worktrees] root, else the repository's parent. The
main branch is [worktrees] main, else `main`, else what the main checkout has checked out.

Errors, each one line and nothing half-made:
  - invalid role (not an identifier)                      -> BadInput, exit 65
  - root not writable (cannot make the directory there)   -> Refused, exit 77: a permission
    refusal, as the rest of the mesh maps EACCES; fixing it means changing permissions or
    --root, not retrying
  - the path exists but is not this role's worktree, or mesh/<role> is checked out
    elsewhere                                             -> ConfigError, exit 78
  - the worktree folder, its .claude/ or anything in it, or a folder on the way to it, is
    another user's or writable by others (planted beside the repository before the mesh
    made it, or opened since): their hook would be merged into the gate's settings and run
    as us                                                 -> Refused, exit 77
  - `remove` of a worktree with uncommitted changes or unpicked commits, without --force
                                                          -> Busy, exit 75
  - `git worktree add` itself fails (say a post-checkout hook says no) -> git's line, exit 70
If `git worktree add` fails, a directory it created is removed, the registration pruned and
a branch it created deleted.

`ensure` also installs the lock gate (see `install_gate`) so that Claude Code in that
worktree asks `file-lock check --hook` before every edit.
"""

import errno
import json
import os
import shlex
import shutil

from ..core import clock, config, errors, events, fs, git as gitfiles, proc, trust
from ..core.ids import validate_name
from . import gitops, history

BRANCH_PREFIX = "mesh/"
SETTINGS = os.path.join(".claude", "settings.local.json")
EXCLUDE_LINE = ".claude/settings.local.json"
GATE_MATCHER = ".*"  # every tool: the gate knows which ones write (locks.gate)
GATE_TIMEOUT = 30
_REFUSALS = (errno.EACCES, errno.EPERM, errno.EROFS)


# -- pure logic ----------------------------------------------------------------------------

def branch_for(role: str) -> str:
    return BRANCH_PREFIX + validate_name(role, "role")


def path_for(root_dir: str, repo_root: str, role: str) -> str:
    """<root>/<repo name>-wt-<role>."""
    name = os.path.basename(os.path.normpath(repo_root))
    return os.path.join(root_dir, f"{name}-wt-{validate_name(role, 'role')}")


def parse_worktree_list(text: str) -> list[dict]:
    """`git worktree list --porcelain` -> [{path, head, branch (short name or None), ...}]."""
    found, current = [], None
    for line in text.splitlines() + [""]:
        if not line:
            if current:
                found.append(current)
            current = None
            continue
        key, _, value = line.partition(" ")
        if key == "worktree":
            current = {"path": value, "head": None, "branch": None, "detached": False,
                       "bare": False, "prunable": False, "locked": False}
        elif current is None:
            continue
        elif key == "HEAD":
            current["head"] = value
        elif key == "branch":
            current["branch"] = value.removeprefix("refs/heads/")
        elif key in ("detached", "bare", "prunable", "locked"):
            current[key] = True
    return found


def merge_gate(settings: dict, command: str) -> dict:
    """settings with our PreToolUse gate in it: other keys and other hooks are kept; an
    older gate entry (another file-lock path) is replaced, so reinstalling is idempotent."""
    merged = dict(settings)
    hooks = dict(merged.get("hooks") or {})
    entries = [e for e in (hooks.get("PreToolUse") or []) if not _is_gate(e)]
    entries.append({"matcher": GATE_MATCHER,
                    "hooks": [{"type": "command", "command": command,
                               "timeout": GATE_TIMEOUT}]})
    hooks["PreToolUse"] = entries
    merged["hooks"] = hooks
    return merged


def _is_gate(entry) -> bool:
    if not isinstance(entry, dict):  # any matcher: an older gate's is replaced too
        return False
    return any(isinstance(h, dict) and str(h.get("command", "")).endswith("check --hook")
               and "file-lock" in str(h.get("command", "")) for h in entry.get("hooks") or [])


def with_exclude(text: str, line: str = EXCLUDE_LINE) -> str | None:
    """The exclude file's text with line added, or None when it is already there."""
    present = {x.strip().lstrip("/") for x in text.splitlines()}
    if line.lstrip("/") in present:
        return None
    if text and not text.endswith("\n"):
        text += "\n"
    return text + line + "\n"


# -- the lock gate -------------------------------------------------------------------------

def gate_command() -> str:
    return f"{shlex.quote(proc.meshtools_command('file-lock'))} check --hook"


def install_gate(worktree_path) -> str:
    """Write the PreToolUse lock gate into <worktree>/.claude/settings.local.json (merged
    with what is there) and keep that file out of git via the repository's info/exclude.
    Returns the settings path. A settings file that is not a JSON object is a ConfigError:
    we would rather refuse than clobber someone's settings. Settings (or any of .claude/)
    that another user could have written are Refused (77): merging kept their hooks."""
    worktree_path = os.fspath(worktree_path)
    path = os.path.join(worktree_path, SETTINGS)
    trust.check_tree(os.path.join(worktree_path, ".claude"), "the worktree's settings")
    try:
        current = fs.read_json(path, default={})
    except ValueError as e:
        raise errors.ConfigError(f"{path}: not valid JSON ({e}); fix or remove it")
    if not isinstance(current, dict):
        raise errors.ConfigError(f"{path}: expected a JSON object")
    merged = merge_gate(current, gate_command())
    if merged != current:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fs.atomic_write(path, json.dumps(merged, indent=2) + "\n", mode=0o644)
    exclude = os.path.join(gitfiles.find_worktree(worktree_path).common_dir, "info", "exclude")
    try:
        with open(exclude, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    updated = with_exclude(text)
    if updated is not None:
        os.makedirs(os.path.dirname(exclude), exist_ok=True)
        fs.atomic_write(exclude, updated, mode=0o644)
    return path


# -- the repository ------------------------------------------------------------------------

def root_dir(home, main_root: str, explicit: str | None = None) -> str:
    configured = explicit or config.value(home, "worktrees", "root")
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    return os.path.dirname(os.path.abspath(main_root))


def registered(root: str) -> list[dict]:
    return parse_worktree_list(gitops.out(root, "worktree", "list", "--porcelain"))


def _same(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _record(role: str, path: str, branch: str, **extra) -> dict:
    record = {"ts": clock.iso(), "kind": "worktree", "role": role, "path": path,
              "branch": branch}
    record.update(extra)
    return record


def ensure(home, repo, role: str, root: str | None = None) -> dict:
    """Create (or find) the role's worktree; install the lock gate. Idempotent."""
    branch = branch_for(role)
    main_root, main = gitops.main_of(repo, config.of(home))
    path = path_for(root_dir(home, main_root, root), main_root, role)
    home.ensure()
    with fs.flocked(home.worktree_lock):
        trust.check(path, "the worktree")  # one planted there is never used, nor merged
        existing = _existing(main_root, path, branch)
        created = existing is None
        if created:
            _add(main_root, path, branch, main)
        _check_ours(main_root, path)
        install_gate(path)
        head = gitops.out(path, "rev-parse", "HEAD")
    record = _record(role, path, branch, base=main, head=head, created=created)
    if created:
        events.emit(home, "worktree.created", role=role, path=path, branch=branch, base=main,
                    head=head)
    return record


def agent_workdir(home, role, workdir: str | None) -> str:
    """Where a role's agent works: --workdir, else, for a role that writes code, its
    worktree (ensured), else the cwd. A writing role never works in the main checkout,
    where its commits would land straight on main: Refused (77), naming its worktree."""
    if role.read_only:
        return os.path.abspath(workdir or ".")
    if workdir is None:
        return ensure(home, home.repository().root, role.name)["path"]
    found = gitfiles.find_worktree(workdir)
    if found and _same(found.root, gitfiles.main_root(found.common_dir)):
        tree = path_for(root_dir(home, found.root), found.root, role.name)
        where = ("is the main checkout" if _same(workdir, found.root)
                 else f"is in {found.root}, the main checkout")
        raise errors.Refused(f"{workdir} {where}: a {role.name} agent works in "
                             f"its worktree {tree} (leave out --workdir, or "
                             f"`mesh-worktree ensure {role.name}`)")
    return os.path.abspath(workdir)


def _existing(main_root: str, path: str, branch: str) -> dict | None:
    """The role's live worktree at path, None if there is none yet; ConfigError when the
    path or the branch is taken by something else."""
    stale = False
    for wt in registered(main_root):
        at_path = _same(wt["path"], path)
        if (at_path or wt["branch"] == branch) and not os.path.isdir(wt["path"]):
            stale = True  # registered, but its directory was deleted: prune, make afresh
        elif at_path and wt["branch"] == branch:
            return wt
        elif at_path:
            raise errors.ConfigError(f"{path} is a worktree on {wt['branch'] or 'a detached HEAD'},"
                                     f" not {branch}")
        elif wt["branch"] == branch and os.path.isdir(wt["path"]):
            raise errors.ConfigError(f"{branch} is already checked out at {wt['path']}, "
                                     f"not {path}")
    if stale:
        gitops.run(main_root, "worktree", "prune")
    if os.path.lexists(path) and not (os.path.isdir(path) and not os.listdir(path)):
        raise errors.ConfigError(f"{path} exists and is not the {branch} worktree "
                                 f"(move it away, or choose another --root)")
    return None


def _check_ours(main_root: str, path: str) -> None:
    """Refused (77) unless path is, still, a worktree of main_root's repository that
    nobody else could have changed: it may have been made by someone else between the
    check before `git worktree add` and now."""
    trust.check(path, "the worktree")
    found = gitfiles.worktree_at(path)
    main = gitfiles.worktree_at(main_root)
    if not found or not main or not _same(found.common_dir, main.common_dir):
        raise errors.Refused(f"refusing the worktree {path}: it is not a worktree of "
                             f"{main_root}")


def _add(main_root: str, path: str, branch: str, main: str) -> None:
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        if e.errno in _REFUSALS:
            raise errors.Refused(f"cannot create worktree root {parent}: {e.strerror}")
        raise errors.ConfigError(f"cannot create worktree root {parent}: {e.strerror}")
    if not os.path.isdir(parent):
        raise errors.ConfigError(f"worktree root {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise errors.Refused(f"cannot create {path}: {parent} is not writable")
    new_branch = not gitops.has_branch(main_root, branch)
    had_dir = os.path.isdir(path)
    args = (["worktree", "add", "-q", "-b", branch, path, f"refs/heads/{main}"] if new_branch
            else ["worktree", "add", "-q", path, branch])
    result = gitops.run(main_root, *args, check=False)
    if result.returncode == 0:
        return
    # Nothing half-made: no registration, no branch we made, no directory we made.
    if not had_dir and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    gitops.run(main_root, "worktree", "prune", check=False)
    if new_branch and gitops.has_branch(main_root, branch):
        gitops.run(main_root, "branch", "-q", "-D", branch, check=False)
    error = gitops.failure(result, f"git worktree add {path}")
    for text in ("Permission denied", "Read-only file system", "Operation not permitted"):
        if text in str(error):
            raise errors.Refused(f"cannot create {path}: {text[0].lower() + text[1:]}")
    raise error


def mesh_worktrees(main_root: str) -> list[dict]:
    return [wt for wt in registered(main_root)
            if (wt["branch"] or "").startswith(BRANCH_PREFIX)]


def describe(main_root: str, main: str, wt: dict, trailers: set[str] | None = None) -> dict:
    """A listed worktree as a record: role, path, branch, head, dirty, changes, unpicked.
    trailers: history.trailers_on(main), when the caller describes several."""
    branch = wt["branch"]
    role = branch[len(BRANCH_PREFIX):]
    present = os.path.isdir(wt["path"])
    changes = len(gitops.status_lines(wt["path"])) if present else 0
    return _record(role, wt["path"], branch, head=wt["head"], dirty=changes > 0,
                   changes=changes, unpicked=len(history.unpicked(main_root, main, branch, trailers)),
                   missing=not present)


def list_worktrees(home, repo) -> list[dict]:
    main_root, main = gitops.main_of(repo, config.of(home))
    trailers = history.trailers_on(main_root, main)  # one walk of main's history for them all
    return [describe(main_root, main, wt, trailers) for wt in mesh_worktrees(main_root)]


def refusal(changes: int, unpicked: int) -> str | None:
    """Why a worktree may not be removed without --force, or None."""
    why = []
    if changes:
        why.append(f"{changes} uncommitted change{'s' if changes != 1 else ''}")
    if unpicked:
        why.append(f"{unpicked} unpicked commit{'s' if unpicked != 1 else ''}")
    return " and ".join(why) or None


def remove(home, repo, role: str, force: bool = False) -> dict:
    """Remove the role's worktree and its branch. Without force, refuse (Busy, 75) while it
    holds uncommitted changes or commits not yet on main; the branch goes with it only when
    fully picked (or forced), so no work is ever dropped silently."""
    branch = branch_for(role)
    main_root, main = gitops.main_of(repo, config.of(home))
    home.ensure()
    with fs.flocked(home.worktree_lock):
        wt = next((w for w in mesh_worktrees(main_root) if w["branch"] == branch), None)
        has_branch = gitops.has_branch(main_root, branch)
        if wt is None and not has_branch:
            raise errors.BadInput(f"no worktree and no branch for role {role}")
        path = wt["path"] if wt else None
        present = bool(path) and os.path.isdir(path)
        changes = len(gitops.status_lines(path)) if present else 0
        unpicked = len(history.unpicked(main_root, main, branch)) if has_branch else 0
        why = refusal(changes, unpicked)
        if why and not force:
            land = f"land with `mesh-pick --role {role}`, or " if unpicked else ""
            raise errors.Busy(f"{role}: {why} in {path or branch}; {land}"
                              f"--force to discard")
        if wt is not None:
            args = ["worktree", "remove"] + (["--force", "--force"] if force else []) + [path]
            if present:
                gitops.run(main_root, *args)
            else:
                gitops.run(main_root, "worktree", "prune")
        if has_branch:
            gitops.run(main_root, "branch", "-q", "-D", branch)
    record = _record(role, path, branch, removed=wt is not None, branch_deleted=has_branch,
                     dropped_changes=changes, dropped_commits=unpicked, forced=bool(force))
    events.emit(home, "worktree.removed", role=role, path=path, branch=branch,
                dropped_changes=changes, dropped_commits=unpicked, forced=bool(force))
    return record
