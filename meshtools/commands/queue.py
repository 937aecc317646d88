"""The task queue: queue-push, queue-drain, queue-results, queue-stat, queue-dead.

    queue-push "make test"                    one task to tasks:queue:default
    queue-push --role builder - < tasks.jsonl  a batch: all enqueued, or none (exit 65)
    queue-drain --queue builder --agent shell a worker: XREADGROUP, run, result + ACK
    queue-drain --queue builder --agent claude  the same, each task a `claude -p` run
    queue-results --wait ID                   block until ID has its result
"""

import os
import sys
import time

import click

from .. import cli, complete
from ..core import clock, config, errors, jsonl

RESULT_COLUMNS = ["id", "status", "exit_code", "duration", "worker", "attempt"]


@cli.command("queue-push")
@click.argument("prompt", required=False)
@click.option("--role", metavar="ROLE", shell_complete=complete.roles,
              help="Route to ROLE's queue (roles.toml `queue`; default: the task's "
                   "role's, else tasks:queue:default).")
@click.option("--id", "task_id", metavar="ID", help="The task's id (default: generated).")
@click.option("--max-attempts", type=click.IntRange(1, 100), help="Deliveries before it is "
                                                                  "dead-lettered (default 3).")
@click.option("--timeout", type=cli.Seconds(positive=True), metavar="SECONDS",
              help="Kill the task after SECONDS.")
@cli.mesh_options(redis=True)
def push(prompt, role, task_id, max_attempts, timeout, mesh):
    """Enqueue PROMPT as a task, or JSON lines from stdin (`-`, or no PROMPT with piped stdin).

    Pushing an id that is already queued or done changes nothing (the record says
    "duplicate"), so a retried cron job never duplicates work.

    Exit 0: the tasks are on disk (the mesh's Redis fsyncs a write before it answers).
    Exit 74: Redis could not store them (a full disk); nothing was queued.
    """
    from ..queue.tasks import batch, normalise

    overrides = {k: v for k, v in (("id", task_id), ("max_attempts", max_attempts),
                                   ("timeout", timeout)) if v is not None}
    if prompt is None or prompt == "-":
        if task_id is not None:
            raise click.UsageError("--id names one task: give PROMPT, or ids in the JSON lines")
        lines = cli.stdin_lines()
        raw = [(n, jsonl.parse_line(line, n)) for n, line in enumerate(lines, 1)]
        tasks = batch([(n, r) for n, r in raw if r is not None], overrides)
        if not tasks:
            raise errors.BadInput("no tasks on stdin")
    else:
        tasks = [normalise({**overrides, "prompt": prompt})]
    from ..queue.broker import Broker

    known = None
    if role is not None or any(t.get("role") for t in tasks):  # start-up: roles only if named
        from ..core import roles

        known = roles.load(mesh.home)
    batch = [(t, Broker.queue_for(t, role, known)) for t in tasks]
    broker = mesh.broker()
    for record in broker.push(batch):
        note = " (duplicate: " + record["state"] + ")" if record.get("duplicate") else ""
        mesh.emit(record, f"{record['id']} -> {broker.names.queue(record['queue'])}{note}")


@cli.command("queue-drain")
@click.option("--queue", "queues", multiple=True, metavar="NAME", shell_complete=complete.queues,
              help="Queues to drain, in priority order (default: default).")
@click.option("--agent", default="shell", show_default=True, metavar="NAME",
              help="How a task runs: shell, claude, or an [agents.NAME] of config.toml.")
@click.option("--role", "role_name", metavar="ROLE", shell_complete=complete.roles,
              help="The role an agent runs as (model, tools, charter, budget); default: the "
                   "role the one --queue names.")
@click.option("--consumer", metavar="NAME",
              help="Consumer name; keep it stable per worker slot so a restart finishes its "
                   "own pending tasks (default: $MESH_SESSION, else HOST-PID).")
@click.option("--workdir", type=click.Path(exists=True, file_okay=False),
              help="Where tasks run (default: a role that writes code, its worktree; else "
                   "the cwd). Never the main checkout for a writing role.")
@click.option("--once", is_flag=True, help="Handle one task, then exit.")
@click.option("--max-tasks", type=click.IntRange(min=1), metavar="N", help="Exit after N tasks.")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option("--timeout", "default_timeout", type=cli.Seconds(positive=True),
              metavar="SECONDS", help="Timeout for tasks that set none (an agent: the role's).")
@click.option("--startup-timeout", type=cli.Seconds(positive=True),
              metavar="SECONDS", help="Kill an agent that prints nothing for SECONDS after "
                                      "its start (default 60).")
@cli.mesh_options(identity=True, redis=True)
def drain(queues, agent, role_name, consumer, workdir, once, max_tasks, burst, default_timeout,
          startup_timeout, mesh):
    """Run tasks from the queues; print each result as it is recorded.

    With --agent claude a subscription's usage window or a spend limit hands the task back
    (its attempt not counted) and pauses dispatch mesh-wide until the limit lifts; a plain
    rate limit (an API key's 429) or an overload retries the task alone after a jittered
    backoff (config.toml `[retry] base, cap`), the mesh running on; `[budget] daily_usd`
    pauses dispatch until the next UTC midnight once the day's spend reaches the cap.

    A worker with a role that writes code (--role, or the role the one --queue names for an
    agent) runs its tasks in that role's worktree, as mesh-agent does; with --workdir the
    main checkout is refused (77).
    """
    from ..executors import choose
    from ..core import proc
    from ..core.ids import validate_name
    from ..queue.connection import reviver
    from ..queue.pause import daily_cap
    from ..queue.limits import retry_backoff
    from ..queue.worker import Worker
    from ..coord.sessions import task_reporter

    cli.exclusive(("--once", once), ("--max-tasks", max_tasks))
    queues = [validate_name(q, "queue name") for q in queues] or ["default"]
    session = mesh.session(required=False)
    consumer = consumer or session or f"{proc.hostname()}-{os.getpid()}"
    validate_name(consumer, "consumer name")
    choose.validate_agent(config.of(mesh.home), agent)  # before the role: name the wrong flag
    from ..core import roles

    role = None
    if role_name is not None:
        role = roles.get(mesh.home, role_name)
    elif agent != "shell" and len(queues) == 1:  # a role's own queue: that role
        role = roles.of_queue(roles.load(mesh.home), queues[0])
    executor = choose.make_executor(agent, home=mesh.home, role=role, session=session,
                                     startup_timeout=startup_timeout,
                                     on_phase=choose.heartbeat_phase(mesh.home, session))
    executor.check()  # a missing CLI is exit 69 before any task is taken
    if role is not None:  # a writing role's tasks would commit straight onto main
        from ..landing.worktree import agent_workdir

        workdir = agent_workdir(mesh.home, role, workdir)
    if role is not None and role.lands:
        from ..landing.work import RecordingExecutor

        executor = RecordingExecutor(executor, mesh.home, role.name)  # the anchor lands it
    if default_timeout is None and role is not None:
        default_timeout = role.timeout
    worker = Worker(broker=mesh.broker(blocking=True, loaded=False),
                    beat_broker=mesh.broker(loaded=False),
                    executor=executor, consumer=consumer, queues=queues,
                    workdir=os.path.abspath(workdir or "."), max_tasks=1 if once else max_tasks,
                    burst=burst, default_timeout=default_timeout,
                    block_ms=200 if burst else 2000,  # burst: a short last look, then exit
                    on_result=lambda r: mesh.emit(r, result_line(r)),
                    on_task=task_reporter(mesh.home, session),
                    daily_budget_usd=daily_cap(config.of(mesh.home)),
                    retry_backoff=retry_backoff(config.of(mesh.home)),
                    revive_redis=reviver(mesh.home, mesh.redis_url))
    if not (burst or once or max_tasks):
        mesh.tell(f"worker {consumer}: waiting for tasks on queue {', '.join(queues)} "
                  f"in {os.path.abspath(workdir or '.')} (^C to stop)")
    sys.exit(worker.run())


def result_line(record: dict) -> str:
    """A result as one line for a person (queue-drain, queue-results, meshctl execute)."""
    return (f"{record['id']} {record['status']} (exit {record.get('exit_code')}, "
            f"{record.get('duration', 0):.2f}s, attempt {record.get('attempt')})")


@cli.command("queue-results")
@click.option("--follow", "-f", is_flag=True, help="Keep printing results as they come.")
@click.option("--task", "task_ids", multiple=True, metavar="ID", help="Only these tasks.",
              shell_complete=complete.task_ids)
@click.option("--wait", "wait_id", metavar="ID", shell_complete=complete.task_ids,
              help="Block until task ID has its result; print it; exit 0 if ok, 1 if not.")
@click.option("--timeout", type=cli.SECONDS, metavar="SECONDS",
              help="With --wait: give up after SECONDS (exit 75).")
@cli.mesh_options(redis=True)
def results(follow, task_ids, wait_id, timeout, mesh):
    """Results of finished tasks, oldest first, as JSON lines."""
    from ..queue.results import Results

    results = Results(mesh.broker(blocking=True))
    if wait_id is not None:
        record = results.wait(wait_id, timeout)
        mesh.emit(record, result_line(record))
        sys.exit(errors.OK if record["status"] == "ok" else errors.NEGATIVE)
    wanted = set(task_ids)
    last = "0-0"
    for last, record in results.follow(last):
        _show_result(mesh, record, wanted)
    if follow:
        errors.exit_on_sigterm()
        while True:
            for last, record in results.follow(last, block=1000):
                _show_result(mesh, record, wanted)


def _show_result(mesh, record: dict, wanted: set) -> None:
    if not wanted or record["id"] in wanted:
        mesh.emit(record, result_line(record))


@cli.command("queue-stat")
@cli.mesh_options(redis=True)
def stat(mesh):
    """Per queue: length, pending, lag, consumers (their idle times; their heartbeat age and
    whether they are alive), dead letters, and the age of the oldest pending task."""
    from ..queue.pause import Pauses
    from ..queue.stats import queue_records

    broker = mesh.broker()
    records = queue_records(broker)
    pause = Pauses.of(broker).paused()
    if mesh.as_json:
        for record in records:
            jsonl.write(record)
        if pause:
            jsonl.write({"ts": clock.iso(), "kind": "pause", **pause})
    else:
        rows = [dict(r, consumers=_consumers_cell(r["consumers"])) for r in records]
        mesh.table(rows, ["queue", "length", "pending", "lag", "consumers", "dead",
                          "oldest_pending_age"])
        if pause:
            click.echo(f"dispatch paused until {pause.get('until_ts') or '?'} "
                       f"({pause.get('reason')}): queue-resume ends it now")


def _consumers_cell(consumers: list[dict]) -> str:
    """How many consumers, and how many of them beat: Redis keeps a dead one listed."""
    alive = sum(1 for c in consumers if c["alive"])
    return f"{len(consumers)} ({alive} alive)" if alive < len(consumers) else str(alive)


@cli.command("queue-pause")
@click.option("--for", "duration", required=True, metavar="DURATION",
              help="How long: 90s, 30m, 6h, 1d.")
@click.option("--reason", default="manual", show_default=True, help="Shown by queue-stat.")
@cli.mesh_options(redis=True)
def pause(duration, reason, mesh):
    """Stop workers from starting tasks, mesh-wide, for a while (a running task finishes)."""
    from ..core.roles import parse_duration
    from ..queue.pause import Pauses

    try:
        seconds = parse_duration(duration)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--for")
    record = Pauses.of(mesh.broker()).pause(time.time() + seconds, reason, by="queue-pause")
    mesh.emit({"ts": clock.iso(), "kind": "pause", **record},
              f"dispatch paused until {record.get('until_ts')} ({record.get('reason')})")


@cli.command("queue-resume")
@cli.mesh_options(redis=True)
def resume(mesh):
    """End a pause now (a usage-limit, budget or manual one); workers start tasks again."""
    from ..queue.pause import Pauses

    ended = Pauses.of(mesh.broker()).resume(by="queue-resume")
    mesh.emit({"ts": clock.iso(), "kind": "pause", "resumed": ended is not None,
               "ended": ended}, "dispatch resumed" if ended else "dispatch was not paused")


@cli.group("queue-dead")
def dead():
    """Dead letters: tasks that failed max_attempts times, with their reasons."""


def _selected(letters, ids, everything):
    if bool(ids) == everything:
        raise click.UsageError("name task IDs or give --all (not both)")
    return letters.selected(ids, everything)


@dead.command("list", cls=cli.Command)
@cli.mesh_options(redis=True)
def dead_list(mesh):
    """Every dead letter with its reason."""
    from ..queue.broker import DeadLetters

    records = DeadLetters(mesh.broker()).list()
    if mesh.as_json:
        for record in records:
            jsonl.write(record)
    else:
        mesh.table(records, ["id", "queue", "reason", "ts"])


@dead.command("retry", cls=cli.Command)
@click.argument("ids", nargs=-1, shell_complete=complete.dead_ids)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@cli.mesh_options(redis=True)
def dead_retry(ids, everything, mesh):
    """Put dead letters back on their queues with fresh attempts."""
    from ..queue.broker import DeadLetters

    letters = DeadLetters(mesh.broker())
    records = letters.runnable(_selected(letters, ids, everything))
    for record in records:
        reply = letters.retry(record)
        if reply is None:
            continue
        retried, detail = reply
        base = {"ts": clock.iso(), "kind": "task", "id": record["id"], "queue": record["queue"],
                "retried": retried}
        if retried:
            mesh.emit(dict(base, entry=detail),
                      f"{record['id']} -> {letters.broker.names.queue(record['queue'])}")
        else:
            mesh.emit(dict(base, duplicate=True, state=detail),
                      f"{record['id']} not retried: a duplicate letter (the task is {detail})")


@dead.command("purge", cls=cli.Command)
@click.argument("ids", nargs=-1, shell_complete=complete.dead_ids)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@cli.mesh_options(redis=True)
def dead_purge(ids, everything, mesh):
    """Forget dead letters for good (their ids may be pushed again, unless the id has moved
    on since: a letter that duplicates a finished or re-queued task leaves its state)."""
    from ..queue.broker import DeadLetters

    letters = DeadLetters(mesh.broker())
    for record in _selected(letters, ids, everything):
        if letters.purge(record):
            mesh.emit({"ts": clock.iso(), "kind": "dead", "id": record["id"], "purged": True},
                      f"purged {record['id']}")
