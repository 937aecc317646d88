"""meshctl: the umbrella. Porcelain of its own (home; init and the rest in their own modules)
plus every tiny command under a short name, each imported only when called so that
`meshctl peers` costs what `coord-peers` does."""

import importlib

import click

from .. import __version__, cli

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
    "init": "meshtools.commands.init:init",
    "down": "meshtools.commands.down:down",
    "trace": "meshtools.commands.trace:trace",
    "dash": "meshtools.commands.dash:dash",
    "top": "meshtools.commands.top:mesh_top",
    "demo": "meshtools.commands.demo:demo",
}


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
@cli.mesh_options()
def home(mesh):
    """Print the mesh's state directory (for scripts: cd "$(meshctl home)")."""
    click.echo(mesh.home.path)
