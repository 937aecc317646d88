"""mesh-roles: the mesh's roles (the packaged roles.toml with MESH_HOME/roles.toml applied)."""

import click

from .. import cli, complete
from ..core import roles as role_defs
from ..core import clock

COLUMNS = ["name", "model", "queue", "concurrency", "lands", "every", "description"]


def _records(mesh) -> list[dict]:
    return [{"ts": clock.iso(), **role.summary()}
            for role in role_defs.load(mesh.home_if_any).values()]


@cli.group("mesh-roles", invoke_without_command=True)
@cli.mesh_options()
@click.pass_context
def mesh_roles(ctx, mesh):
    """The roles: one line each (JSON lines with name and model when piped or --json).
    `mesh-roles show ROLE` prints one role in full."""
    if ctx.invoked_subcommand is None:
        _list(mesh)


@mesh_roles.command("list", cls=cli.Command)
@cli.mesh_options()
def list_roles(mesh):
    """Every role, one line each."""
    _list(mesh)


def _list(mesh) -> None:
    records = _records(mesh)
    if not mesh.as_json:
        records = [dict(r, every=role_defs.human_duration(r["every"])) for r in records]
    mesh.table(records, COLUMNS)


@mesh_roles.command("show", cls=cli.Command)
@click.argument("role", shell_complete=complete.roles)
@cli.mesh_options()
def show(role, mesh):
    """One role in full: boundaries, charter, standing prompt, schedule."""
    record = {"ts": clock.iso(), **role_defs.get(mesh.home_if_any, role).record()}
    if mesh.as_json:
        mesh.emit(record)
        return
    for key, value in record.items():
        if key in ("ts", "kind"):
            continue
        if isinstance(value, dict):  # route_words, route_paths: pattern = weight
            value = ", ".join(f"{k} = {v:g}" for k, v in value.items()) or "-"
        elif isinstance(value, (list, tuple)):
            value = ", ".join(value) if value else "-"
        click.echo(f"{key + ':':18s}{'-' if value is None else value}")
