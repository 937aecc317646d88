"""MESH_HOME: the one state directory of a mesh, and the layout inside it.

Resolution, first match wins (documented in meshtools(7)):
  1. --home DIR
  2. $MESH_HOME
  3. <common git dir>/meshtools of the repository around the current directory, so that
     every worktree of one repository (and a tmux pane or cron job cd'd into any of them)
     agrees on one mesh.
Else there is no mesh: a user must never talk to one they did not know existed (there used
to be a hidden mesh under ~/.local/state for every command run outside a repository).

A home, and every file the mesh reads settings or commands from in it (config.toml,
roles.toml, mesh.json), must pass core.trust (ours or root's, writable by nobody else, and
so every directory on the way): else Refused, 77. A MESH_HOME another user made first ran
their `[pick] gate` as us.
"""

import json
import os
from functools import cached_property

from . import fs, git, trust
from .errors import ConfigError

HOME_ENV = "MESH_HOME"
NO_MESH = "not inside a git repository: cd into one, or pass --home DIR / set MESH_HOME"


def resolve(explicit: str | None = None, cwd: str | None = None) -> str:
    return trust.check(_find(explicit, cwd), "the mesh home")


def _find(explicit: str | None, cwd: str | None) -> str:
    if explicit:
        return _directory(os.path.abspath(explicit))
    if os.environ.get(HOME_ENV):
        return _directory(os.path.abspath(os.environ[HOME_ENV]))
    worktree = git.find_worktree(cwd or os.getcwd())
    if worktree:
        return os.path.join(worktree.common_dir, "meshtools")
    raise ConfigError(NO_MESH)


def _directory(path: str) -> str:
    """path, unless it (or the nearest part of it that exists) is no directory: a file given
    as the home failed later, anywhere, as an internal error (NotADirectoryError, 70)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as e:  # a name too long, a loop of symlinks
        shown = path if len(path) <= 100 else path[:100] + "..."
        raise ConfigError(f"the mesh home {shown} is unusable: {e.strerror}") from None
    here = path
    while not os.path.lexists(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        raise ConfigError(f"the mesh home is no directory: {here} is a file"
                          + ("" if here == path else f" (the home given is {path})"))
    return path


class MeshHome:
    """One mesh's state directory. (A plain class: a dataclass costs every command's
    start-up a millisecond, and this one is built by all of them.)"""

    def __init__(self, path: str):
        self.path = path

    def __eq__(self, other) -> bool:
        return isinstance(other, MeshHome) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"MeshHome({self.path!r})"

    @classmethod
    def find(cls, explicit: str | None = None) -> "MeshHome":
        return cls(resolve(explicit))

    @classmethod
    def find_any(cls, explicit: str | None = None) -> "MeshHome | None":
        """The mesh's home, or None where there is none, for what works without a mesh."""
        try:
            return cls.find(explicit)
        except ConfigError:
            return None

    def sub(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def ensure(self, *parts: str) -> str:
        """Create (0700) and return a directory inside the home: parts, or one of the
        layout's paths below (home.ensure(home.spawns))."""
        target = self.sub(*parts)
        try:
            fs.ensure_dir(target)
        except (FileExistsError, NotADirectoryError):
            raise ConfigError(f"{target} exists and is not a directory")
        except PermissionError:
            raise ConfigError(f"cannot create {target}: permission denied")
        return trust.check(target, "the mesh home")  # made by someone else since resolve?

    # The layout; meshtools(7) lists it too.
    @property
    def sessions(self) -> str:
        return self.sub("sessions")

    @property
    def inboxes(self) -> str:
        return self.sub("inbox")

    @property
    def locks(self) -> str:
        return self.sub("locks")

    @property
    def spawns(self) -> str:
        """Supervisors' state and control requests, mesh-spawn's records and logs."""
        return self.sub("spawns")

    @property
    def tasks(self) -> str:
        """tasks/<id>/: one directory per task run here: work.json, the commits it made
        (landing.work owns it), and stream.jsonl, what its agent did (executors.trace)."""
        return self.sub("tasks")

    def task_dir(self, task_id: str) -> str:
        """tasks/<id>/ of a valid task id (BadInput, 65, for any other: never a path)."""
        from .ids import validate_task_id

        return os.path.join(self.tasks, validate_task_id(task_id))

    @property
    def pick_lock(self) -> str:
        return self.sub("pick.lock")

    @property
    def worktree_lock(self) -> str:
        return self.sub("worktree.lock")

    @property
    def anchor_lock(self) -> str:
        """flock held by the one mesh-anchor loop for its life."""
        return self.sub("anchor.lock")

    @property
    def anchor_cursor(self) -> str:
        """The last tasks:results entry the anchor handled."""
        return self.sub("anchor-cursor")

    @property
    def redis_dir(self) -> str:
        return self.sub("redis")

    @property
    def events_file(self) -> str:
        return self.sub("events.jsonl")

    @property
    def config_file(self) -> str:
        return self.sub("config.toml")

    @property
    def roles_file(self) -> str:
        """The mesh's own roles.toml, over the packaged roles (core.roles)."""
        return self.sub("roles.toml")

    @property
    def mesh_file(self) -> str:
        return self.sub("mesh.json")

    @cached_property
    def config(self) -> dict:
        """config.toml as a dict ({} when absent); tomllib is imported only when needed."""
        try:
            with open(self.trusted(self.config_file), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        import tomllib

        try:
            return tomllib.loads(data.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{self.config_file}: {e}")

    def repository(self, cwd: str | None = None) -> git.Worktree:
        """The repository the mesh serves: the one around cwd, else the one recorded at init."""
        here = git.find_worktree(cwd or os.getcwd())
        if here:
            return here
        recorded = fs.read_json(self.trusted(self.mesh_file)) or {}
        common = recorded.get("common_dir")
        if common and os.path.isdir(common):
            root = recorded.get("root") or git.main_root(common)
            return git.Worktree(root, common, common)
        raise ConfigError("not inside a git repository, and the mesh records none "
                          "(run `meshctl init` in the repository, or cd into it)")

    def trusted(self, path: str) -> str:
        """path, a file of the home that says what to run or where: Refused (77) unless it
        and every directory on the way are ours (core.trust); checked at each read, since
        the home may have been made (by someone else) after resolve."""
        return trust.check(path, "the mesh's file")

    def describe(self) -> str:
        return json.dumps({"home": self.path})
