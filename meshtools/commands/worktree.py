"""mesh-worktree: one git worktree per agent role, each on its own mesh/<role> branch.

    mesh-worktree ensure ROLE [--root DIR]   create (idempotently) <root>/<repo>-wt-<role>/
    mesh-worktree list                       the mesh's worktrees: dirty? unpicked commits?
    mesh-worktree remove ROLE [--force]      remove it and its branch (75 while work is left)
"""

import click

from .. import cli, complete
from ..landing import worktree

LIST_COLUMNS = ["role", "branch", "head", "dirty", "unpicked", "path"]


@cli.group("mesh-worktree",
           epilog="Exit codes: 0 done, 64 usage, 65 invalid role, 75 work would be lost "
                  "(remove without --force), 77 root not writable, 78 path taken or config.")
def mesh_worktree():
    """Per-role git worktrees beside the repository (the anchor lands their work on main).

    The root is --root, else config.toml [worktrees] root, else the repository's parent;
    the worktree starts from [worktrees] main, else `main`, else the main checkout's branch.
    """


@mesh_worktree.command()
@click.argument("role", shell_complete=complete.roles)
@click.option("--root", metavar="DIR", help="Where worktrees go (default: [worktrees] root, "
                                            "else the repository's parent directory).")
@cli.mesh_options()
def ensure(role, root, mesh):
    """Create ROLE's worktree on mesh/ROLE if missing, and install the lock gate in it."""
    record = worktree.ensure(mesh.home, mesh.home.repository().root, role, root)
    verb = "created" if record["created"] else "exists:"
    mesh.emit(record, f"{verb} {record['path']} on {record['branch']} (from {record['base']})")


@mesh_worktree.command("list")
@cli.mesh_options()
def list_command(mesh):
    """One record per mesh worktree: branch, head, dirty, commits not yet on main."""
    records = worktree.list_worktrees(mesh.home, mesh.home.repository().root)
    if not mesh.as_json:
        records = [dict(r, head=(r["head"] or "")[:12]) for r in records]
    mesh.table(records, LIST_COLUMNS)


@mesh_worktree.command()
@click.argument("role", shell_complete=complete.roles)
@click.option("--force", is_flag=True,
              help="Remove even with uncommitted changes or unpicked commits (they are lost).")
@cli.mesh_options()
def remove(role, force, mesh):
    """Remove ROLE's worktree and delete mesh/ROLE (refused while work would be lost)."""
    record = worktree.remove(mesh.home, mesh.home.repository().root, role, force)
    mesh.emit(record, f"removed {record['path'] or record['branch']}")
