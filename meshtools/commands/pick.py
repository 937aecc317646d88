"""mesh-pick: land a worker's commits on the main branch, gated in a scratch worktree.

    mesh-pick --role ROLE [--task ID] [--gate CMD]         every unpicked commit of mesh/ROLE
    mesh-pick --commits BASE..HEAD [--task ID] [--gate CMD] exactly that range (or one commit)
    mesh-pick TASK_ID [--gate CMD]                          the range recorded for the task

Exit 0 picked or nothing to pick, 1 conflict or gate failed (main untouched).
"""

import sys

import click

from .. import cli, complete
from ..landing import gitops, history, pick, worktree
from ..core import config, errors


@cli.command("mesh-pick",
             epilog="Exit codes: 0 picked (or nothing to pick), 1 conflict or gate failed "
                    "(main unchanged), 64 usage, 65 unknown commit or task, 75 landing waits "
                    "(the checkout of main is not clean, or main moved meanwhile), 78 config.")
@click.argument("task_id", required=False, metavar="[TASK_ID]", shell_complete=complete.task_ids)
@click.option("--role", metavar="ROLE", help="Pick every unpicked commit of mesh/ROLE.",
              shell_complete=complete.roles)
@click.option("--commits", "span", metavar="BASE..HEAD", help="Pick exactly this range.")
@click.option("--task", metavar="ID", shell_complete=complete.task_ids,
              help="The task the commits belong to (recorded only).")
@click.option("--gate", metavar="CMD",
              help="Run CMD (sh -c, in the scratch worktree) after picking; main moves only "
                   "if it passes (default: config.toml [pick] gate).")
@click.option("--no-gate", is_flag=True, help="Skip the configured gate.")
@cli.mesh_options()
def mesh_pick(task_id, role, span, task, gate, no_gate, mesh):
    """Cherry-pick (-x) a worker's commits onto the main branch, gated.

    The commits are applied onto main's tip in a scratch worktree (MESH_HOME/landing/scratch)
    and the gate runs there; only when it passes does main move (a compare-and-swap of its
    ref), with the checkout that has main checked out, which must be clean. All or nothing:
    on a conflict, a failing gate or a kill, main stays where it was. Commits whose change
    is already on main (reachable, an equivalent patch, or named in a "cherry picked from"
    line) are skipped, never picked twice.
    """
    if sum(x is not None for x in (task_id, role, span)) != 1:
        raise click.UsageError("give exactly one of TASK_ID, --role ROLE, --commits BASE..HEAD")
    if task_id is not None and task is not None:
        raise click.UsageError("TASK_ID already names the task; drop --task")
    cli.exclusive(("--gate", gate), ("--no-gate", no_gate))
    gate = "" if no_gate else gate
    if task_id is not None:
        record = pick.pick_task(mesh.home, task_id, gate)
    else:
        main = gitops.main_of(mesh.home.repository().root, config.of(mesh.home))
        if role is not None:
            commits = history.role_commits(main.root, main.branch, worktree.branch_for(role))
        else:
            commits = history.range_commits(main.root, *history.parse_range(span))
        record = pick.pick(mesh.home, main, commits, role=role, task=task, gate=gate)
    mesh.emit(record, _human(record))
    if record["status"] in ("conflict", "gate_failed"):
        if not mesh.as_json and record.get("gate_output"):
            click.echo(record["gate_output"], err=True)
        sys.exit(errors.NEGATIVE)


def _human(record: dict) -> str:
    status = record["status"]
    if status == "picked":
        return (f"picked {len(record['picked'])} onto {record['main']} "
                f"({record['main_before'][:12]}..{record['main_after'][:12]})"
                + (f", skipped {len(record['skipped'])}" if record["skipped"] else ""))
    if status == "skipped":
        return f"nothing to pick ({len(record['skipped'])} already on {record['main']})"
    if status == "conflict":
        return (f"conflict picking {record.get('commit', '')[:12]} in "
                f"{', '.join(record['conflicts'])}; {record['main']} left as it was")
    return (f"gate failed (exit {record.get('gate_exit')}): {record.get('gate')}; "
            f"{record['main']} left at {record['main_before'][:12]}")
