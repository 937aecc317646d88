"""mesh-agent: one headless agent run for a role, its result as one JSON line.

    mesh-agent builder                          the role's standing prompt, in its worktree
    mesh-agent builder "fix the flaky test" --workdir ../wt-builder --as builder-1
    echo "summarise docs/" | mesh-agent research -     a read-only role: in the cwd

A role that writes code works in its worktree (<repo>-wt-<role>/, made if missing) unless
--workdir says otherwise, and never in the main checkout: that is refused (77), since its
commits would land straight on main.

Exit 0 ok, 1 failed or timed out, 69 the agent CLI is missing, 75 usage- or rate-limited
(or the mesh is paused: nothing was started), 77 a writing role asked to work in the main
checkout. This is what the supervisor restarts to keep a persistent agent. Redis is
optional: when the mesh's Redis runs, a paused mesh is honoured, the run's cost counts into
the daily budget and a usage window or a spend limit pauses the whole mesh; when it does
not, the run goes ahead all the same (Redis is never started for it).
"""

import sys

import click

from .. import cli, complete
from ..core import clock, config, errors, jsonl


@cli.command("mesh-agent")
@click.argument("role_name", metavar="ROLE", shell_complete=complete.roles)
@click.argument("prompt", required=False)
@click.option("--workdir", type=click.Path(exists=True, file_okay=False),
              help="Where the agent works (default: a role that writes code, its worktree; "
                   "a read-only role, the cwd). Never the main checkout for a writing role.")
@click.option("--timeout", type=cli.Seconds(positive=True), metavar="SECONDS",
              help="Kill the run after SECONDS (default: the role's timeout).")
@click.option("--startup-timeout", type=cli.Seconds(positive=True),
              metavar="SECONDS", help="Kill a run that prints nothing for SECONDS after its "
                                      "start (default 60).")
@click.option("--agent", default="claude", show_default=True, metavar="NAME",
              help="claude, or an [agents.NAME] of config.toml.")
@cli.mesh_options(identity=True, redis=True)
def mesh_agent(role_name, prompt, workdir, timeout, startup_timeout, agent, mesh):
    """Run PROMPT (default: ROLE's standing prompt; `-`: stdin) as ROLE; print the result."""
    from ..core import roles
    from ..coord.sessions import task_reporter
    from ..executors import choose
    from ..landing import worktree
    from ..queue import limits, pause as pausing
    from ..queue.tasks import new_id, result_record

    role = roles.get(mesh.home, role_name)
    if prompt == "-":
        prompt = "".join(cli.stdin_lines())
    prompt = prompt if prompt and prompt.strip() else role.prompt
    session = mesh.session(required=False)
    choose.validate_agent(config.of(mesh.home), agent, shell=False)
    executor = choose.make_executor(agent, home=mesh.home, role=role, session=session,
                                     startup_timeout=startup_timeout,
                                     on_phase=choose.heartbeat_phase(mesh.home, session))
    executor.check()
    workdir = worktree.agent_workdir(mesh.home, role, workdir)
    base = {"role": role.name, "session": session, "agent": agent}
    pauses = _pauses(mesh)
    cap = pausing.daily_cap(config.of(mesh.home))
    held = pauses and _best_effort(lambda: pauses.in_force(cap, "mesh-agent"))
    if held:
        jsonl.write({"ts": clock.iso(), "kind": "result", **base, "status": "paused",
                     "paused": held})
        sys.exit(errors.TEMPFAIL)
    task = {"id": new_id(), "prompt": prompt}
    report = task_reporter(mesh.home, session, phases=False)  # meshctl trace PEER follows it
    _quietly(report, task["id"])
    try:
        outcome = executor.run(task, workdir, timeout or role.timeout)
    finally:
        _quietly(report, None)
    record = result_record(task, outcome, **base)
    paused = pausing.after_run(pauses, outcome.details, cap, session or role.name,
                               guard=_best_effort)
    if paused:
        record["paused"] = paused[-1]
    jsonl.write(record)
    if record["status"] == "ok":
        sys.exit(errors.OK)
    limited = record["status"] in (limits.USAGE_LIMITED, limits.RATE_LIMITED)
    sys.exit(errors.TEMPFAIL if limited else errors.NEGATIVE)


def _pauses(mesh):
    """The mesh's pauses when its Redis already runs, else None (never started here)."""
    from ..queue.pause import Pauses

    try:
        return Pauses.of(mesh.broker(start=False))
    except errors.Unavailable:
        return None


def _quietly(report, task_id) -> None:
    """Tell the registry which task the session runs, best-effort: an unregistered session
    is simply not watched, never a reason to fail the run."""
    if report is None:
        return
    try:
        report(task_id)
    except errors.MeshError:
        pass


def _best_effort(operation):
    """operation() against the mesh's Redis, best-effort: None when it fails (a plain run
    never depends on Redis)."""
    import redis

    try:
        return operation()
    except redis.RedisError:
        return None
