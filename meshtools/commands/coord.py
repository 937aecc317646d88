"""coord: register sessions, list peers, heartbeat, and pass messages.

Each command is a standalone entry point (coord-register, coord-peers, ...) and, as the
same click object, a subcommand of `coord` and of `meshctl`.
"""

import os

import click

from .. import cli, complete
from ..coord import inbox, registry
from ..core import clock, errors, jsonl

STATES = ("alive", "stale", "dead")
PEER_COLUMNS = ["id", "role", "state", "heartbeat_age", "phase", "phase_age", "pid", "branch"]


def _warn(message: str) -> None:
    click.echo(f"{cli.prog_name()}: warning: {message}", err=True)


def _human(record: dict) -> str:
    return (f"{record['id']} ({record['role']}) pid {record['pid']} on {record['host']}, "
            f"branch {record.get('branch') or '-'}, phase {record.get('phase')}")


@cli.command("coord-register")
@click.option("--role", required=True, shell_complete=complete.roles,
              help="The session's role (builder, memory, ...).")
@click.option("--id", "session_id", metavar="ID",
              help="Session id (default --as / $MESH_SESSION, else the first free <role>-<n>).")
@click.option("--pid", type=int, metavar="PID",
              help="The process the session lives as long as (default: the parent, i.e. "
                   "the shell or agent that ran this).")
@click.option("--phase", metavar="TEXT", help="Initial phase (default: registered).")
@click.option("--shell", "shell", is_flag=True,
              help="Print `export MESH_SESSION=ID;` for the calling shell, as ssh-agent "
                   "does: eval \"$(coord-register --role builder --shell)\".")
@cli.mesh_options(identity=True)
def register(role, session_id, pid, phase, shell, mesh):
    """Register a session of one of the mesh's roles (mesh-roles).

    Another role is refused (65); a live duplicate id is refused (75), a dead one taken
    over (its locks are released), and a role at its concurrency (roles.toml; one anchor
    per mesh) is refused (75)."""
    from ..coord.sessions import join

    if session_id is None:
        session_id = _own_role_session(mesh, role)
    # The parent: the shell that ran us (in `eval "$(coord-register --shell)"` the shell
    # execs us from its command substitution, so the parent is the calling shell itself).
    record = join(mesh.home, role, session_id, pid if pid is not None else os.getppid(), phase)
    if shell:
        import shlex

        click.echo(f"export {cli.SESSION_ENV}={shlex.quote(record['id'])};")
        return
    mesh.emit(record, f"registered {_human(record)}")
    if not mesh.as_json:
        click.echo(f"to act as it: export {cli.SESSION_ENV}={record['id']}", err=True)


def _own_role_session(mesh, role: str) -> str | None:
    """The caller's own session (--as / $MESH_SESSION) as the default id: re-registering it.
    One of another role is refused, never registered under the new role (or, alive, refused
    as a duplicate id the caller never gave)."""
    session_id = mesh.session(required=False)
    held = registry.get(mesh.home, session_id) if session_id else None
    if held and held.get("role") != role:
        raise errors.UsageError(
            f"you are {session_id}, a {held.get('role')} session (--as / "
            f"${cli.SESSION_ENV}): pass --id for a {role} session, or unset {cli.SESSION_ENV}")
    return session_id


@cli.command("coord-peers")
@click.option("--role", "roles", multiple=True, metavar="ROLE", help="Only these roles.",
              shell_complete=complete.roles)
@click.option("--state", "states", multiple=True, type=click.Choice(STATES),
              help="Only sessions in these states.")
@click.option("--prune", is_flag=True,
              help="Remove dead sessions and release their locks (their inboxes stay).")
@cli.mesh_options()
def peers(roles, states, prune, mesh):
    """Sessions with their liveness (alive / stale / dead) and heartbeat age."""
    if prune:
        from ..coord.sessions import prune as prune_dead

        removed = prune_dead(mesh.home)
        mesh.table([dict(r, pruned=True) for r in removed], PEER_COLUMNS)
        return
    now = clock.now()
    records = [registry.classify(mesh.home, r, now)
               for r in registry.all_sessions(mesh.home, warn=_warn)]
    records = [dict(r, ts=clock.iso(now)) for r in records
               if (not roles or r.get("role") in roles) and (not states or r["state"] in states)]
    mesh.table(records, PEER_COLUMNS)
    if not records and not mesh.as_json:  # a blank terminal would look like a hang or a bug
        click.echo("no matching peers" if roles or states
                   else "no peers (coord-register --role ROLE to join)", err=True)


@cli.command("coord-heartbeat")
@click.option("--phase", metavar="TEXT", help="What the session is doing now.")
@cli.mesh_options(identity=True)
def heartbeat(phase, mesh):
    """Refresh the calling session's heartbeat (and phase)."""
    from ..coord.sessions import beat

    record = beat(mesh.home, mesh.session(), phase)
    mesh.emit(record, f"heartbeat {record['id']} ({record.get('phase')})")


@cli.command("coord-unregister")
@cli.mesh_options(identity=True)
def unregister(mesh):
    """Remove the calling session from the registry (its inbox stays)."""
    from ..coord.sessions import UNREGISTERED, leave

    record = leave(mesh.home, mesh.session(), UNREGISTERED)
    mesh.emit(record, f"unregistered {record['id']}")


@cli.command("coord-send")
@click.argument("to", metavar="TO", shell_complete=complete.recipients)
@click.argument("text", metavar="MESSAGE")
@cli.mesh_options(identity=True)
def send(to, text, mesh):
    """Send MESSAGE to TO: a peer id, a role, `all`, or `-` (peer records on stdin).

    MESSAGE `-` reads stdin: JSON lines (one message each, under `data`) when it starts
    with `{`, else the whole text as one message (under `body`).
    """
    if to == "-" and text == "-":
        raise click.UsageError("TO and MESSAGE cannot both come from stdin")
    sender = mesh.session(required=False) or inbox.person()
    targets = _stdin_targets() if to == "-" else inbox.targets(mesh.home, to, sender)
    payloads = _stdin_payloads() if text == "-" else [{"body": text}]
    for record in inbox.post(mesh.home, sender, targets, payloads):
        mesh.emit(record, f"sent {record['id']} to {record['to']}")


def _stdin_targets() -> list[str]:
    from ..core.ids import validate_name

    targets = []
    for lineno, line in enumerate(cli.stdin_lines(), 1):
        record = jsonl.parse_line(line, lineno)
        if record is None:
            continue
        if not isinstance(record.get("id"), str):
            raise errors.BadInput(f"stdin line {lineno}: a peer record needs a string 'id'")
        targets.append(validate_name(record["id"], "peer id"))
    if not targets:
        raise errors.BadInput("no peers on stdin")
    return targets


def _stdin_payloads() -> list[dict]:
    text = cli.stdin_lines().read()
    if text.lstrip().startswith("{"):
        payloads = [{"data": r} for r in jsonl.read_all(text.splitlines())]
    else:
        payloads = [{"body": text}]
    if not text.strip():
        raise errors.BadInput("empty message on stdin")
    return payloads


@cli.command("coord-recv")
@click.option("--peek", is_flag=True, help="Show new messages without marking them read.")
@click.option("--follow", "-f", is_flag=True, help="Keep running; print messages as they come.")
@click.option("--all", "everything", is_flag=True,
              help="Also list messages read before (marked read).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N new messages.")
@cli.mesh_options(identity=True)
def recv(peek, follow, everything, limit, mesh):
    """Read the calling session's inbox, oldest first, as JSON lines."""
    if follow and (peek or limit):
        raise click.UsageError("--follow takes no --peek or --limit")
    me = mesh.session()
    if everything:
        for record in inbox.read_messages(mesh.home, me, warn=_warn):
            _show(mesh, record)
    if follow:
        errors.exit_on_sigterm()
        messages = inbox.follow(mesh.home, me, warn=_warn)
    else:
        messages = inbox.receive(mesh.home, me, peek=peek, limit=limit, warn=_warn)
    for record in messages:
        _show(mesh, record)


def _show(mesh, record: dict) -> None:
    content = record.get("body") if "body" in record else jsonl.dumps(record.get("data"))
    mesh.emit(record, f"[{record['ts']}] {record['from']}: {content}")


@cli.group("coord")
def coord():
    """The session registry and inbox: register, peers, heartbeat, unregister, send, recv."""


for _name, _command in {"register": register, "peers": peers, "heartbeat": heartbeat,
                        "unregister": unregister, "send": send, "recv": recv}.items():
    coord.add_command(_command, _name)
