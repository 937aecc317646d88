"""meshctl demo: a whole mesh on a scratch repository, in under a minute, no API key (the
logic is meshtools.demo's)."""

import os

import click

from .. import cli


@cli.command("demo")
@click.option("--keep", is_flag=True,
              help="Leave the scratch mesh up (and its repository) and say how to open the "
                   "dash on it.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines even on a terminal.")
@click.pass_context
def demo(ctx, keep, as_json):
    """Show what a mesh does, on a scratch repository with a scripted stand-in for the agent
    CLI (no API key): boot it (meshctl init), hand a task in plain words to each role
    (meshctl execute), see a builder's commit landed on main by the anchor, a deadlock
    refused, a killed worker's task finished by another, a snapshot of the mesh; then stop
    it (meshctl down --all) and remove the scratch directory. One line per step on a
    terminal; JSON lines (kind "step", then "demo") when piped. ^C stops and removes
    everything too (130); a failing step is named, after the same cleanup. It never
    touches the mesh of $MESH_HOME or of the current directory: it makes its own."""
    from ..demo.runner import Demo

    umbrella = ctx.meta.get(cli.UMBRELLA, {})  # `meshctl --json demo`
    mesh = cli.Mesh(None, as_json or bool(umbrella.get("as_json")))
    live = not mesh.as_json and os.environ.get("TERM") != "dumb"

    def progress(text: str) -> None:
        """The running step's line, cut to the terminal's width: a line that wrapped would
        not be replaced by its ✔ line (\r goes back to the start of its last row only)."""
        if live:
            import shutil

            from ..dash.text import cut

            click.echo(cut(f"· {text} …", shutil.get_terminal_size().columns - 1), nl=False)

    def report(record: dict, text: str) -> None:
        mesh.emit(record, ("\r\x1b[K" if live else "") + text)

    record = Demo(keep, report, progress, screen=not mesh.as_json,
                  snapshot=snapshot_command()).run()
    lines = [f"demo done in {record['seconds']:.1f}s"]
    if keep:
        lines += [f"the mesh is still up: {record['dash']}",
                  f"  (or MESH_HOME={record['home']} meshctl dash); stop it with "
                  f"`cd {record['repository']} && meshctl down --all`, then rm -r "
                  f"{record['scratch']}"]
    mesh.emit(record, "\n".join(lines))


def snapshot_command() -> tuple[str, ...]:
    """The mesh at a glance: mesh-top's snapshot (meshctl top) where this install has it,
    else meshctl status."""
    from .meshctl import SUBCOMMANDS

    return ("meshctl", "top" if "top" in SUBCOMMANDS else "status")
