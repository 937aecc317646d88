"""Booting the whole mesh (meshctl init): its state directory and config.toml, its Redis and
the consumer groups of every role's queue, a worktree per worker role, then one supervised
queue worker per role. The anchor's session (anchor-1) is its deterministic loop with the
anchor's queue worker under it (mesh-anchor --drain); memory, groomer and security only
drain their queues: the anchor's loop enqueues their standing tasks on their schedule.

Idempotent: what runs is the registry's sessions per role (`plan`). A role with a live
session is left as it is; a dead one is started again under its id; a FATAL one (its
supervisor gave up) is reported, and started again only when asked (restart_fatal).
Every missing supervisor is started first, then all are waited for at once, until each
session is registered and ready: its worker blocks on its queue (phase waiting).

`Boot.run` yields one record per step as it is done (kind "step": step, status, seconds)
and a last one for the mesh (kind "mesh"); `describe` is a step as a person reads it.
`select` and `plan` are pure.
"""

import os
import re
import time

from ..agents import launch
from ..core.roles import ANCHOR, unknown
from ..coord import registry
from ..coord.sessions import WAITING
from ..core import clock, config, errors, events, fs, lifecycle, proc

STARTED, RUNNING, FATAL, RESTART, START, FAILED = ("started", "running", "fatal", "restart",
                                                   "start", "failed")
FATAL_PHASE = "FATAL"
POLL = 0.02

DEFAULT_CONFIG = """\
# meshtools configuration for this mesh (see meshtools(7)).

[coord]
# A session whose heartbeat is older than stale_after is "stale". It is "dead" when its
# process is gone, or, on another host, when its heartbeat is older than dead_after:
# a live process on this host is never dead (nor its id and locks taken over).
stale_after = 60
dead_after = 600

[locks]
# A path's scope is the nearest directory holding one of these, else its top-level directory.
manifests = ["Cargo.toml", "pyproject.toml", "package.json", "go.mod"]
# Explicit rules come first (fnmatch on the repository-relative path):
# [[locks.rule]]
# match = "docs/*"
# scope = "docs"

# Roles: the packaged seven, overridden key by key in roles.toml beside this file
# (`mesh-roles show ROLE` prints one; see meshtools(7), ROLES).

[worktrees]
# root = "~/projects"          # where <repo>-wt-<role>/ go (default: beside the repository)
# main = "main"                # the branch work lands on

[pick]
# gate = "make test"           # run in a scratch worktree before main moves; failure keeps main

[anchor]
# max_handbacks = 1            # how often a failed or conflicting task is handed back
# stuck_after = 1800           # seconds in one agent step before a live peer is "stuck"
# fatal_cooldown = 300         # seconds (or "5m") a FATAL spawned peer stays down before a respawn
# fatal_respawns = 3           # respawns of a FATAL peer before giving up on it

[budget]
# daily_usd = 50.0             # stop starting agent tasks once the mesh spent this today (UTC)

[retry]
# base = 15.0                  # after a rate limit or an overload a task waits base*2^(n-1)
# cap = 300.0                  # seconds (at most cap; a random half to all of it) before retry n+1

[agent]
# command = ["claude"]         # the agent CLI (stream-json compatible)

[supervisor]
# base = 1.0                   # the n-th rapid failure waits base*n^2 seconds ...
# cap = 60.0                   # ... at most this long
# min_uptime = 10.0            # a run shorter than this is a rapid failure
# max_failures = 5             # give up (FATAL) after this many in a row
# rerun_delay = 30.0           # a persistent agent's pause between runs of its standing prompt

[dash]
# Services `meshctl dash` checks, each within timeout seconds: kind = tcp (target host:port),
# http (a URL; below 400 is up), unix (a socket path), pidfile (a file naming a live pid)
# or command (a shell command; exit 0 is up). The mesh's own Redis is always shown.
# [[dash.service]]
# name = "reveried"
# kind = "pidfile"
# target = "/run/reveried.pid"
# [[dash.service]]
# name = "redis"
# kind = "tcp"
# target = "localhost:6379"
# timeout = 2.0
# [[dash.service]]
# name = "memcache"
# kind = "tcp"
# target = "localhost:11211"
# LLM endpoints work can be offloaded to: reachable, latency, models. kind = ollama
# (GET url/api/tags), openai (an OpenAI-compatible GET url/v1/models) or http (GET url).
# [[dash.offload]]
# name = "ollama"
# kind = "ollama"
# url = "http://localhost:11434"
# [[dash.offload]]
# name = "openrouter"
# kind = "openai"
# url = "https://openrouter.ai/api"
# timeout = 3.0
"""


# --- pure decisions -----------------------------------------------------------------------

def select(roles: dict, spec: str | None) -> list[str]:
    """The roles to boot, the anchor first. spec is --roles: names to boot (none: every
    role) and names after '-' to leave out; the anchor boots unless left out (-anchor).
    BadInput (65) naming the roles for an unknown one; UsageError (64) for no role left."""
    items = [item.strip() for item in (spec or "").split(",") if item.strip()]
    wanted = [item for item in items if not item.startswith("-")]
    without = {item[1:] for item in items if item.startswith("-")}
    for name in [*wanted, *sorted(without)]:
        if name not in roles:
            raise errors.BadInput(unknown(name, roles))
    names = [ANCHOR, *wanted] if wanted else list(roles)
    chosen = [name for name in roles if name in names and name not in without]
    if not chosen:
        raise errors.UsageError(f"--roles {spec} leaves no role to boot")
    return sorted(chosen, key=lambda name: name != ANCHOR)


def plan(selected: list[str], sessions: list[dict], restart_fatal: bool = False) -> list[dict]:
    """What each selected role calls for, from the registry's classified sessions:
    {role, session, action} with action running (a live session: pid too; one per live
    session), fatal (its supervisor gave up; restart with restart_fatal), or start (under
    a dead session's id, else <role>-1)."""
    actions = []
    for role in selected:
        mine = [s for s in sessions if s.get("role") == role]
        fatal = [s for s in mine if s.get("phase") == FATAL_PHASE]
        live = [s for s in mine if s["state"] != "dead" and s not in fatal]
        dead = [s for s in mine if s["state"] == "dead" and s not in fatal]
        if live:
            actions += [{"role": role, "session": s["id"], "action": RUNNING, "pid": s.get("pid"),
                         "phase": s.get("phase")} for s in live]
        elif fatal:
            actions.append({"role": role, "session": fatal[0]["id"],
                            "action": RESTART if restart_fatal else FATAL,
                            "phase_age": fatal[0].get("phase_age")})
        else:
            actions.append({"role": role, "session": dead[0]["id"] if dead else f"{role}-1",
                            "action": START})
    return actions


def ready(record: dict | None, pid: int) -> bool:
    """Whether the session the supervisor pid registered is ready: its worker waits on its
    queue, or has taken a task already (a standing one may be there at once)."""
    return bool(record) and record.get("pid") == pid and (
        record.get("phase") == WAITING or bool(record.get("task")))


def tmux_name(repo_root: str) -> str:
    """The tmux session of the mesh of repo_root: mesh-<repository name> ('.' and ':' are
    tmux's own separators)."""
    return "mesh-" + re.sub(r"[^A-Za-z0-9_-]", "-", os.path.basename(os.path.normpath(repo_root)))


_MARKS = {"done": "✔", STARTED: "✔", "created": "✔", RUNNING: "·", "exists": "·",
          FATAL: "✘", FAILED: "✘"}


def describe(step: dict) -> str:
    """A step as the line a person reads: `✔ builder-1    started (pid 123)    0.81s`."""
    status = step["status"]
    if step.get("session"):
        name = step["session"]
        if status == FAILED:
            detail = f"failed: {step.get('error')}"
        elif status == FATAL:
            detail = "FATAL (its supervisor gave up; --restart-fatal starts it again)"
        else:
            phase = f", {step['phase']}" if step.get("phase") else ""
            detail = f"{status} (pid {step.get('pid')}{phase})"
    else:
        name = step["step"]
        detail = step.get("detail") or status
    seconds = f"{step['seconds']:.2f}s" if step.get("seconds") is not None else ""
    return f"{_MARKS.get(status, '·')} {name:<13} {detail:<52} {seconds}".rstrip()


def summary(steps: list[dict], seconds: float) -> str:
    sessions = [s for s in steps if s.get("session")]
    counts = {status: sum(1 for s in sessions if s["status"] == status)
              for status in (STARTED, RUNNING, FATAL, FAILED)}
    told = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    return f"mesh: {len(sessions)} session(s) ({told or 'none'}) in {seconds:.2f}s"


# --- the state directory ------------------------------------------------------------------

def prepare(home) -> dict:
    """The state directory (0700, with its sessions, inboxes and locks), mesh.json (the
    repository it serves) and config.toml. A record: root, common_dir, created, new, and
    `was` (the mode the directory had when it was not private, else None)."""
    repository = home.repository()
    home.ensure()
    was = fs.tighten(home.path)
    for path in (home.sessions, home.inboxes, home.locks):
        home.ensure(path)
    recorded = fs.read_json(home.mesh_file) or {}
    new = "created" not in recorded
    record = {"root": os.path.realpath(repository.root if repository.git_dir == repository.common_dir
                                       else os.path.dirname(repository.common_dir)),
              "common_dir": os.path.realpath(repository.common_dir),
              "created": recorded.get("created", clock.iso())}
    if record != {k: recorded.get(k) for k in record}:
        fs.atomic_write_json(home.mesh_file, record)
    if not os.path.exists(home.config_file):
        fs.atomic_write(home.config_file, DEFAULT_CONFIG)
    if new:
        events.emit(home, "mesh.init", home=home.path, root=record["root"])
    return dict(record, new=new, was=was)


# --- the boot -----------------------------------------------------------------------------

class Boot:
    """One `meshctl init`. mode: detach or tmux; agent: the executor of every worker;
    redis_url/namespace: as given on the command line (handed on to the spawned)."""

    def __init__(self, home, roles: dict, selected: list[str], agent: str,
                 mode: str = "detach", restart_fatal: bool = False,
                 redis_url: str | None = None, namespace: str | None = None,
                 dash: list[str] | None = None):
        self.home, self.roles, self.selected, self.agent = home, roles, selected, agent
        self.mode, self.restart_fatal = mode, restart_fatal
        self.redis_url, self.namespace = redis_url, namespace
        self.dash = dash  # the command of the tmux session's dash window
        self.tmux_session: str | None = None
        self.failed: list[dict] = []

    def check_agents(self) -> None:
        """Before anything is made or spawned: a missing agent CLI is 69, one line."""
        for name in self.selected:
            launch.check_agent(self.home, self.roles[name], self.agent)

    def run(self, redis: bool = True, agents: bool = True):
        """The steps, each yielded when done, then the mesh record."""
        began = time.monotonic()
        self.home.repository()  # no repository: say so before anything else
        if agents:
            self.check_agents()
        # meshctl down waits for this boot to end (and stops all it started); a boot while
        # a down runs is refused (75)
        with lifecycle.starting(self.home):
            yield from self._run(began, redis, agents)

    def _run(self, began: float, redis: bool, agents: bool):
        steps = []
        at = time.monotonic()
        mesh = prepare(self.home)
        yield _step("home", "done", at, detail=self.home.path, path=self.home.path,
                    was=mesh.pop("was"), new=mesh["new"])
        redis_url = None
        if redis:
            at = time.monotonic()
            redis_url = self.start_redis()
            yield _step("redis", "done", at, detail=redis_url, url=redis_url)
        if agents:
            for step in self.start_agents(mesh["root"]):
                steps.append(step)
                yield step
        record = {"ts": clock.iso(), "kind": "mesh", "home": self.home.path, **mesh,
                  "redis": redis_url, "seconds": round(time.monotonic() - began, 3),
                  "sessions": [{k: s.get(k) for k in ("session", "role", "status", "pid")}
                               for s in steps if s.get("session")],
                  "failed": [s["session"] for s in self.failed]}
        if self.tmux_session:
            record["tmux"] = self.tmux_session
        yield record

    def start_redis(self) -> str:
        """The mesh's Redis (the embedded one is started: reachable, new enough and ours,
        or 69 now) and the consumer group of every role's queue, on one connection."""
        from ..queue.broker import Broker
        from ..queue.connection import connect, resolve_url
        from ..queue.names import Names

        broker = Broker(connect(self.home, self.redis_url), Names.from_env(self.namespace))
        for queue in sorted({role.queue for role in self.roles.values()}):
            broker.ensure_group(queue)
        return resolve_url(self.home, self.redis_url, start=False)

    # agents ----------------------------------------------------------------------------

    def start_agents(self, root: str):
        """Report what runs; start every missing supervisor, then wait for them all."""
        now = clock.now()
        sessions = [registry.classify(self.home, r, now) for r in registry.all_sessions(self.home)]
        actions = plan(self.selected, sessions, self.restart_fatal)
        for action in actions:
            if action["action"] in (RUNNING, FATAL):
                step = _step(action["role"], action["action"], None, session=action["session"],
                             role=action["role"], pid=action.get("pid"),
                             phase=action.get("phase"))
                if action["action"] == FATAL:
                    self.failed.append(step)
                yield step
        todo = [a for a in actions if a["action"] in (START, RESTART)]
        if not todo:
            return
        if self.mode == "tmux":
            self.tmux_session = tmux_name(root)
            fresh = not launch.tmux_has_session(self.tmux_session, self.env())
        from ..landing import worktree

        workdirs = {}
        for action in todo:  # in-process, before any spawn: git is busy enough meanwhile
            if action["role"] == ANCHOR:
                workdirs[ANCHOR] = root  # it lands on main and writes nothing
                continue
            at = time.monotonic()
            tree = worktree.ensure(self.home, root, action["role"])
            workdirs[action["role"]] = tree["path"]
            yield _step("worktree", "created" if tree["created"] else "exists", at,
                        detail=f"{action['role']}: {tree['path']}", role=action["role"],
                        path=tree["path"])
        launched = {}
        for action in todo:
            try:
                launched[action["session"]] = self.launch(action, workdirs[action["role"]])
            except errors.MeshError as e:
                step = _step(action["role"], FAILED, None, session=action["session"],
                             role=action["role"], error=str(e))
                self.failed.append(step)
                yield step
        yield from self.wait(launched)
        if self.mode == "tmux" and fresh and self.dash:
            launch.tmux(self.dash, self.env(), "dash", root, session=self.tmux_session)

    def env(self) -> dict:
        return launch.spawn_env(self.home, self.redis_url, self.namespace)

    def launch(self, action: dict, workdir: str) -> dict:
        """Start one supervisor (stopping a FATAL one's first); its spawn record, kept once
        the session is ready."""
        role, session = self.roles[action["role"]], action["session"]
        if action["action"] == RESTART:
            stop_supervisor(self.home, session)
        child = (launch.anchor_argv(self.agent) if role.name == ANCHOR
                 else launch.child_argv(role, workdir, True, self.agent))
        argv = launch.supervisor_argv(role, session, child, config.of(self.home),
                                      persistent=False)
        info = launch.spawn_info(role.name, True, self.mode, workdir, argv)
        process = None
        if self.mode == "tmux":
            info["pid"] = launch.tmux(argv, self.env(), session, workdir,
                                      session=self.tmux_session)
        else:
            process, info["log"] = launch.detach(self.home, argv, self.env(), role.name, workdir)
            info["pid"] = process.pid
        info["respawn"] = (None if role.name == ANCHOR else  # no mesh-spawn for the anchor
                           launch.respawn_argv(role.name, session, self.mode, True, self.agent,
                                               None, self.tmux_session))
        return dict(info, process=process, at=time.monotonic())

    def wait(self, launched: dict):
        """Yield each launched session's step once it is ready (or has failed: its
        supervisor exited, its worker is backing off, or READY_TIMEOUT passed)."""
        pending = dict(launched)
        deadline = time.monotonic() + launch.READY_TIMEOUT
        while pending:
            for session, info in list(pending.items()):
                record = registry.get(self.home, session)
                error = None if ready(record, info["pid"]) else self.failure(record, info)
                if error is False:
                    continue
                del pending[session]
                if error is None:
                    launch.record_spawn(self.home, session, {k: v for k, v in info.items()
                                                             if k not in ("process", "at")})
                    yield _step(info["role"], STARTED, info["at"], session=session,
                                role=info["role"], pid=info["pid"], log=info.get("log"))
                    continue
                taken = registry.classify(self.home, record) if record else None
                if taken and taken["pid"] != info["pid"] and taken["state"] != "dead":
                    # another started it meanwhile (the anchor respawns a dead peer)
                    yield _step(info["role"], RUNNING, None, session=session,
                                role=info["role"], pid=taken["pid"], phase=taken.get("phase"))
                    continue
                step = _step(info["role"], FAILED, info["at"], session=session,
                             role=info["role"], pid=info["pid"], log=info.get("log"),
                             error=error)
                self.failed.append(step)
                yield step
            if pending and time.monotonic() > deadline:
                for session, info in pending.items():
                    step = _step(info["role"], FAILED, info["at"], session=session,
                                 role=info["role"], pid=info["pid"], log=info.get("log"),
                                 error=f"not ready within {launch.READY_TIMEOUT:.0f}s"
                                       f"{launch.tail(info.get('log'))}")
                    self.failed.append(step)
                    yield step
                return
            time.sleep(POLL)

    @staticmethod
    def failure(record: dict | None, info: dict):
        """Why a launched session will not get ready (a line), or False while it may."""
        process = info.get("process")
        gone = (process.poll() is not None if process is not None
                else proc.is_alive(info["pid"]) is False)
        if gone:
            return f"its supervisor exited{launch.tail(info.get('log'))}"
        phase = (record or {}).get("phase") or ""
        if record and record.get("pid") == info["pid"] and phase.startswith("backoff"):
            return f"its worker exited ({phase}){launch.tail(info.get('log'))}"
        return False


def stop_supervisor(home, session: str, timeout: float = 30.0) -> None:
    """Stop the supervisor of session if one still runs (a FATAL one has exited already)."""
    from ..agents import supervisor

    state = supervisor.read_state(home, session)
    if not state or proc.is_alive(state.get("supervisor_pid"), state.get("supervisor_start"),
                                  state.get("host")) is not True:
        return
    supervisor.request(home, session, supervisor.STOP, state["spawn"])
    deadline = time.monotonic() + timeout
    while proc.is_alive(state["supervisor_pid"], state.get("supervisor_start")) is True:
        if time.monotonic() > deadline:
            raise errors.Busy(f"the supervisor of {session} (pid {state['supervisor_pid']}) "
                              f"did not stop within {timeout:.0f}s")
        time.sleep(POLL)


def _step(step: str, status: str, since: float | None, **fields) -> dict:
    seconds = None if since is None else round(time.monotonic() - since, 3)
    return {"ts": clock.iso(), "kind": "step", "step": step, "status": status,
            "seconds": seconds, **fields}
