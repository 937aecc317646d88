"""meshctl: the umbrella. Porcelain of its own (init, home) plus every tiny command under a
short name, imported only when called so that `meshctl peers` costs what `coord-peers` does."""

import importlib
import os

import click

from .. import __version__, cli
from ..core import clock, events, fs
from ..core.home import MeshHome

# name -> "module:object": the very click objects behind the standalone entry points.
SUBCOMMANDS = {
    "register": "meshtools.commands.coord:register",
    "peers": "meshtools.commands.coord:peers",
    "heartbeat": "meshtools.commands.coord:heartbeat",
    "unregister": "meshtools.commands.coord:unregister",
    "send": "meshtools.commands.coord:send",
    "recv": "meshtools.commands.coord:recv",
    "coord": "meshtools.commands.coord:coord",
    "lock": "meshtools.commands.filelock:file_lock",
    "push": "meshtools.commands.queue:push",
    "drain": "meshtools.commands.queue:drain",
    "results": "meshtools.commands.queue:results",
    "stat": "meshtools.commands.queue:stat",
    "dead": "meshtools.commands.queue:dead",
    "pause": "meshtools.commands.queue:pause",
    "resume": "meshtools.commands.queue:resume",
    "events": "meshtools.commands.events:mesh_events",
    "redis": "meshtools.commands.meshredis:mesh_redis",
    "roles": "meshtools.commands.roles:mesh_roles",
    "agent": "meshtools.commands.agent:mesh_agent",
    "worktree": "meshtools.commands.worktree:mesh_worktree",
    "supervise": "meshtools.commands.supervise:mesh_supervise",
    "spawn": "meshtools.commands.spawn:mesh_spawn",
    "pick": "meshtools.commands.pick:mesh_pick",
    "anchor": "meshtools.commands.anchor:mesh_anchor",
    "status": "meshtools.commands.status:status",
    "execute": "meshtools.commands.execute:execute",
    "dash": "meshtools.commands.dash:dash",
    "top": "meshtools.commands.top:mesh_top",
}

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
# gate = "make test"           # run in the main checkout after each landing; failure rolls back

[anchor]
# max_handbacks = 1            # how often a failed or conflicting task is handed back
# stuck_after = 1800           # seconds in one agent step before a live peer is "stuck"
# fatal_cooldown = 300         # seconds (or "5m") a FATAL spawned peer stays down before a respawn
# fatal_respawns = 3           # respawns of a FATAL peer before giving up on it

[budget]
# daily_usd = 50.0             # stop starting agent tasks once the mesh spent this today (UTC)

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


class LazyGroup(cli.Group):
    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *SUBCOMMANDS])

    def get_command(self, ctx, name):
        if name in SUBCOMMANDS:
            module, attr = SUBCOMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings=cli.CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="meshctl")
@cli.umbrella_options
def meshctl():
    """Orchestrate a mesh of parallel coding agents on a git repository."""


@meshctl.command()
@click.option("--no-redis", is_flag=True,
              help="Do not start the mesh's own redis-server now (it starts on first need).")
@cli.mesh_options(redis=True)
def init(no_redis, mesh):
    """Cold-boot the mesh of the repository around the current directory (idempotent):
    its state directory, config.toml, and its Redis."""
    home: MeshHome = mesh.home
    repository = home.repository()
    home.ensure()
    was = fs.tighten(home.path)
    if was is not None:
        click.echo(f"meshctl init: {home.path} was {was:04o}, now 0700 (mesh state is "
                   f"private)", err=True)
    for path in (home.sessions, home.inboxes, home.locks):
        home.ensure(path)
    recorded = fs.read_json(home.mesh_file) or {}
    created = "created" not in recorded
    record = {"root": os.path.realpath(repository.root if repository.git_dir == repository.common_dir
                                       else os.path.dirname(repository.common_dir)),
              "common_dir": os.path.realpath(repository.common_dir),
              "created": recorded.get("created", clock.iso())}
    if record != {k: recorded.get(k) for k in record}:
        fs.atomic_write_json(home.mesh_file, record)
    if not os.path.exists(home.config_file):
        fs.atomic_write(home.config_file, DEFAULT_CONFIG)
    if created:
        events.emit(home, "mesh.init", home=home.path, root=record["root"])
    redis_url = None
    if not no_redis:
        from ..queue.connection import connect, resolve_url

        # starts the embedded one: reachable, new enough and ours, or exit 69 now, not later
        connect(home, mesh.redis_url)
        redis_url = resolve_url(home, mesh.redis_url, start=False)
    mesh.emit({"ts": clock.iso(), "kind": "mesh", "home": home.path, **record,
               "redis": redis_url, "new": created},
              f"mesh ready: {home.path}\n  repository {record['root']}"
              + (f"\n  redis      {redis_url}" if redis_url else ""))


@meshctl.command()
@cli.mesh_options()
def home(mesh):
    """Print the mesh's state directory (for scripts: cd "$(meshctl home)")."""
    click.echo(mesh.home.path)
