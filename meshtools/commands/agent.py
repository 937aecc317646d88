"""mesh-agent: one headless agent run for a role, its result as one JSON line.

    mesh-agent builder                          the role's standing prompt, in the cwd
    mesh-agent builder "fix the flaky test" --workdir ../wt-builder --as builder-1
    echo "summarise docs/" | mesh-agent research -

Exit 0 ok, 1 failed or timed out, 69 the agent CLI is missing, 75 usage-limited (or the mesh
is paused: nothing was started). This is what the supervisor restarts to keep a persistent
agent. Redis is optional: when the mesh's Redis runs, a paused mesh is honoured, the run's
cost counts into the daily budget and a usage limit pauses the whole mesh; when it does
not, the run goes ahead all the same (Redis is never started for it).
"""

import os
import sys
import time

import click

from .. import cli
from ..core import clock, errors, jsonl


@cli.command("mesh-agent")
@click.argument("role_name", metavar="ROLE")
@click.argument("prompt", required=False)
@click.option("--workdir", type=click.Path(exists=True, file_okay=False), default=".",
              help="Where the agent works (its worktree; default: the cwd).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Kill the run after SECONDS (default: the role's timeout).")
@click.option("--startup-timeout", type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="Kill a run that prints nothing for SECONDS after its "
                                      "start (default 60).")
@click.option("--agent", default="claude", show_default=True, metavar="NAME",
              help="claude, or an [agents.NAME] of config.toml.")
@cli.mesh_options(identity=True, redis=True)
def mesh_agent(role_name, prompt, workdir, timeout, startup_timeout, agent, mesh):
    """Run PROMPT (default: ROLE's standing prompt; `-`: stdin) as ROLE; print the result."""
    from ..agents import adapter, roles
    from ..queue import pause as pausing
    from ..queue.tasks import new_id

    role = roles.get(mesh.home, role_name)
    if prompt == "-":
        prompt = "".join(cli.stdin_lines())
    prompt = prompt if prompt and prompt.strip() else role.prompt
    session = mesh.session(required=False)
    known = adapter.known_agents(mesh.home.config)
    if agent == "shell" or agent not in known:
        raise click.UsageError(f"unknown agent {agent!r} (agents: "
                               f"{', '.join(a for a in known if a != 'shell')})")
    executor = adapter.make_executor(agent, home=mesh.home, role=role, session=session,
                                     startup_timeout=startup_timeout,
                                     on_phase=adapter.heartbeat_phase(mesh.home, session))
    executor.check()
    base = {"kind": "result", "role": role.name, "session": session, "agent": agent}
    broker = _broker(mesh)
    cap = pausing.daily_cap(mesh.home.config)
    held = _pause_in_force(broker, pausing, cap)
    if held:
        jsonl.write({"ts": clock.iso(), **base, "status": "paused", "paused": held})
        sys.exit(errors.TEMPFAIL)
    task = {"id": new_id(), "prompt": prompt}
    outcome = executor.run(task, os.path.abspath(workdir), timeout or role.timeout)
    details = outcome.details or {}
    record = {"ts": clock.iso(), **base, "id": task["id"], "status": outcome.status,
              "exit_code": outcome.exit_code, "duration": round(outcome.duration, 4),
              "output": outcome.output}
    for key, value in details.items():
        record.setdefault(key, value)
    stop = pausing.for_outcome(details, time.time())
    if stop and stop[1] == pausing.USAGE_LIMIT:
        record["status"] = "usage_limited"
    if broker is not None:
        record.update(_account(broker, pausing, cap, details, stop, session or role.name))
    jsonl.write(record)
    if record["status"] == "ok":
        sys.exit(errors.OK)
    sys.exit(errors.TEMPFAIL if record["status"] == "usage_limited" else errors.NEGATIVE)


def _broker(mesh):
    """The mesh's broker when its Redis already runs, else None (never started here)."""
    from ..queue.broker import Broker
    from ..queue.connection import connect
    from ..queue.names import Names

    try:
        return Broker(connect(mesh.home, mesh.redis_url, start=False),
                      Names.from_env(mesh.namespace))
    except errors.Unavailable:
        return None


def _pause_in_force(broker, pausing, cap: float | None) -> dict | None:
    """The pause a new run must respect (a spent daily budget starts one)."""
    if broker is None:
        return None
    import redis

    try:
        current = broker.paused()
        if current is None and cap is not None:
            over = pausing.for_budget(broker.spent(pausing.day()), cap, time.time())
            if over:
                current = broker.pause(*over, by="mesh-agent")
        return current
    except redis.RedisError:
        return None


def _account(broker, pausing, cap: float | None, details: dict, stop, by: str) -> dict:
    """Count the spend, pause the mesh on a usage limit, failed login or spent budget."""
    import redis

    extra = {}
    try:
        cost = details.get("cost_usd")
        spent = broker.add_spend(cost, pausing.day()) if isinstance(cost, (int, float)) \
            and cost > 0 else None
        over = pausing.for_budget(spent, cap, time.time())
        for until, reason in (p for p in (stop, over) if p):
            extra["paused"] = broker.pause(until, reason, by=by)
    except redis.RedisError:
        pass
    return extra
