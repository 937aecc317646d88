"""file-lock: the mandatory gate before editing shared files.

    file-lock acquire PATH... [-n | -w SECONDS]    all scopes or none; waits by default
    file-lock release [PATH...] [--all]
    file-lock check PATH... [--hook]               exit 0 if yours, 1 if not
    file-lock status | graph
    file-lock [-n | -w SECONDS] PATH... -- COMMAND  like flock(1): run COMMAND holding them
"""

import os
import signal
import sys

import click

from .. import cli, complete
from ..core import clock, errors, jsonl, proc
from ..locks import gate, graph, policy, readonly
from ..locks.service import LockService, describe, is_dead

WAIT_HELP = "Wait at most SECONDS (exit 75 when still busy)."


class FileLockGroup(cli.Group):
    """`file-lock PATH -- CMD` (flock(1) style) is the hidden `run` subcommand."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            _refuse_typo(args[0], [n for n, c in self.commands.items() if not c.hidden])
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _service(mesh: cli.Mesh) -> LockService:
    """The lock service, told who is registered (a session's locks are its own process's)."""
    import functools

    from ..coord import registry

    return LockService(mesh.home, registered=functools.partial(registry.get, mesh.home))


def _refuse_typo(word: str, names: list[str]) -> None:
    """`file-lock acqure x` is a misspelt subcommand, not `run` on a path named acqure."""
    if word.startswith("-") or os.path.lexists(word):
        return
    hint = errors.did_you_mean(word, names, cutoff=0.75)
    if hint:
        raise errors.UsageError(f"unknown subcommand {word!r}{hint}")


class RunCommand(cli.Command):
    """Split at the first `--` before click swallows it: what follows is the command."""

    def parse_args(self, ctx, args):
        if "--" in args:
            cut = args.index("--")
            args, ctx.meta["argv"] = args[:cut], args[cut + 1:]
        return super().parse_args(ctx, args)


def wait_options(f):
    f = click.option("--lease", type=cli.Seconds(positive=True), metavar="SECONDS",
                     help="Expire the lock after SECONDS unless renewed by acquiring again.")(f)
    f = click.option("-w", "--wait", "timeout", type=cli.SECONDS,
                     metavar="SECONDS", help=WAIT_HELP)(f)
    f = click.option("-n", "--nonblock", is_flag=True, help="Fail at once (exit 75) if busy.")(f)
    return f


def _say_waiting():
    """On a terminal, a wait is not silent: who holds what, and since when (said once)."""
    if not sys.stderr.isatty():
        return None
    return lambda blocking: click.echo(f"file-lock: waiting for {describe(blocking)}",
                                       err=True)


def _timeout(nonblock: bool, timeout: float | None) -> float | None:
    cli.exclusive(("-n", nonblock), ("-w", timeout))
    return 0.0 if nonblock else timeout


@click.group(cls=FileLockGroup, context_settings=cli.CONTEXT_SETTINGS,
             epilog="Exit codes: 0 granted/yours, 1 not yours (check), 64 usage, "
                    "65 bad path or id, 75 busy, timed out or deadlock, 77 not the holder.")
def file_lock():
    """Sub-project locks with deadlock detection: the gate before editing shared files.

    A PATH maps to its scope: the nearest directory below the repository root holding a
    package manifest (Cargo.toml, pyproject.toml, package.json, go.mod), else its top-level
    directory; files at the root share the scope ".".
    """


def _record(holding: dict, **extra) -> dict:
    record = {"ts": clock.iso(), "kind": "lock", "scope": holding["scope"],
              "holder": holding["holder"], "generation": holding["generation"],
              "since": holding["since"], "pid": holding["pid"], "host": holding["host"],
              "lease_until": holding.get("lease_until")}
    record.update(extra)
    return record


@file_lock.command(cls=cli.Command)
@click.argument("paths", nargs=-1, required=True, shell_complete=complete.paths)
@wait_options
@click.option("--pid", "owner_pid", type=int, metavar="PID",
              help="Tie the lock to this process instead of the session's (or the parent's).")
@cli.mesh_options(identity=True)
def acquire(paths, nonblock, timeout, lease, owner_pid, mesh):
    """Lock the scopes of PATHs for the calling session (without one: for the calling
    shell, as flock(1) does): all of them or none."""
    timeout = _timeout(nonblock, timeout)
    service = _service(mesh)
    targets = service.resolve(list(paths))
    if owner_pid is not None and proc.is_alive(owner_pid) is not True:
        raise errors.BadInput(f"--pid {owner_pid}: no such process")
    claimant = service.claimant(mesh.session(required=False), owner_pid)
    errors.exit_on_sigterm()  # a waiter always takes its wait record with it
    granted = service.acquire(claimant, [t.scope for t in targets], timeout=timeout,
                              lease=lease, on_wait=_say_waiting())
    for holding in granted:
        mesh.emit(_record(holding, event="granted"),
                  f"locked {holding['scope']} (generation {holding['generation']})")


@file_lock.command(cls=cli.Command)
@click.argument("paths", nargs=-1, shell_complete=complete.paths)
@click.option("--all", "everything", is_flag=True, help="Release every scope the session holds.")
@click.option("--force", is_flag=True, help="Break another session's lock (an event records it).")
@cli.mesh_options(identity=True)
def release(paths, everything, force, mesh):
    """Release the scopes of PATHs (or --all). Releasing what nobody holds is not an error."""
    if bool(paths) == everything:
        raise click.UsageError("name PATHs or give --all (not both)")
    service = _service(mesh)
    scopes = None if everything else [t.scope for t in service.resolve(list(paths))]
    me = service.claimant(mesh.session(required=False)).id  # the session, else the shell
    for holding in service.release(me, scopes, force=force):
        mesh.emit(_record(holding, event="released"), f"released {holding['scope']}")


@file_lock.command(cls=cli.Command)
@click.argument("paths", nargs=-1, shell_complete=complete.paths)
@click.option("--generation", type=int, metavar="N",
              help="Also require this fencing generation (refuse a stale grant).")
@click.option("--hook", is_flag=True,
              help="Act as a Claude Code PreToolUse hook: read the tool call on stdin, "
                   "exit 2 with the reason to deny.")
@click.option("-q", "--quiet", is_flag=True, help="Exit status only.")
@cli.mesh_options(identity=True)
def check(paths, generation, hook, quiet, mesh):
    """Exit 0 if the caller provably holds the scope of every PATH, 1 if not: held under
    its id, by its live process (the session's, else the calling shell), lease unexpired."""
    if hook:
        sys.exit(_hook(mesh))
    if not paths:
        raise click.UsageError("name at least one PATH")
    service = _service(mesh)
    me = mesh.session(required=False)
    targets = service.resolve(list(paths))
    missing = service.unproven(me, [t.scope for t in targets], generation)
    if missing and not quiet:
        for target in targets:
            if target.scope in missing:
                why = missing[target.scope]
                click.echo(f"file-lock: {_not_yours(target.path, target.scope, why, me)}",
                           err=True)
    sys.exit(errors.NEGATIVE if missing else errors.OK)


def _not_yours(path: str, scope: str, why: str, me: str | None) -> str:
    return (f"{path} is in scope {scope}, which {me or 'this shell'} does not hold "
            f"({why}); take it with: file-lock acquire {scope}")


def _hook(mesh) -> int:
    """Claude Code gate. Anything but a proven yes is a deny (exit 2): never fail open."""
    try:
        reason = _gate(mesh, gate.parse_call(_read_hook_input()))
    except errors.MeshError as e:  # bad input, a path outside the repository, bad config
        reason = f"{e}; denied"
    except BaseException as e:  # noqa: BLE001 - the gate must turn every failure into a deny
        reason = f"lock gate error ({type(e).__name__}: {e}); denying to be safe"
    if reason is None:
        return 0
    click.echo(f"file-lock: {reason}", err=True)
    return 2


DRAIN_LIMIT = 64 << 20


def _read_hook_input() -> bytes:
    """At most one byte more than the gate reads (more is refused by parse_call); the rest
    is drained unread, so the CLI writing it sees no broken pipe before our verdict."""
    data = sys.stdin.buffer.read(gate.MAX_INPUT_BYTES + 1)
    drained = 0
    while len(data) > gate.MAX_INPUT_BYTES and drained < DRAIN_LIMIT:
        chunk = sys.stdin.buffer.read1(1 << 20)
        if not chunk:
            break
        drained += len(chunk)
    return data


def _gate(mesh, call: gate.Call) -> str | None:
    """Why the call is denied, or None when every path it writes is proven the session's:
    inside the repository and the role's write boundary (symlinks resolved), and its scope
    held by the session's live process. A tool outside the role's `tools` is denied, and so
    is, for a read-only role, a tool the gate does not know and a Bash line that is not
    plainly read-only (locks.readonly)."""
    me = mesh.session(required=False)
    if me is None:
        if call.tool in gate.READ_TOOLS:
            return None
        return "no session: $MESH_SESSION is not set for this agent"
    role = _role(mesh, me)
    if role is not None:
        refusal = gate.tool_refusal(call.tool, role.tools, role.read_only)
        if refusal is not None:
            return f"role {role.name}: {refusal}"
    if call.tool == "Bash":
        if role is None or not role.read_only:
            return None
        why = readonly.refusal(call.input.get("command"), role.name)
        return why and f"role {role.name} is read-only, and this line is not plainly so: {why}"
    cwd = call.cwd or os.getcwd()
    paths = [gate.anchored(p, cwd) for p in gate.write_paths(call, exists=_entries_of(cwd))]
    if not paths:
        return None
    service = _service(mesh)
    targets = service.resolve(paths)  # BadInput outside the repository
    for path, target in zip(paths, targets):
        reason = _outside_role(role, target.path)
        if reason is not None:
            return reason
        if gate.hard_linked(path):  # the call's own path: target.path is the repository's
            return f"{target.path} has another name (a hard link): writing it writes that too"
    missing = service.unproven(me, [t.scope for t in targets])
    for target in targets:
        if target.scope in missing:
            return _not_yours(target.path, target.scope, missing[target.scope], me)
    return None


def _entries_of(folder: str):
    """name -> whether folder has an entry of that name: one listing, however many names
    a call makes the gate ask about (none when the folder cannot be listed)."""
    import functools

    @functools.cache
    def names() -> frozenset:
        try:
            return frozenset(os.listdir(folder))
        except OSError:
            return frozenset()

    return lambda name: name in names()


def _role(mesh, me: str):
    """The session's role (None when it is unregistered or its role is not a mesh role)."""
    from ..coord import registry

    record = registry.get(mesh.home, me)
    if not record or not record.get("role"):
        return None
    from ..core import roles

    return roles.load(mesh.home).get(record["role"])


def _outside_role(role, path: str) -> str | None:
    """The role boundary: why the role may not write path, or None if it may (or the
    session has no mesh role)."""
    from ..core import roles

    if role is None or roles.may_write(role, path):
        return None
    allowed = ", ".join(role.writes) if role.writes else "nothing: it is read-only"
    return f"role {role.name} may not write {path} (it may write {allowed})"


@file_lock.command(cls=cli.Command)
@cli.mesh_options()
def status(mesh):
    """Holders and waiters, and since when."""
    service = _service(mesh)
    table = service.snapshot()
    now = clock.now()
    records = []
    for scope, holding in sorted(table["locks"].items()):
        dead = is_dead(holding) or policy.lease_expired(holding, now)
        records.append(_record(holding, state="dead" if dead else "held",
                               age=round(now - holding.get("since_ts", now), 3)))
    edges = policy.wait_for_edges(table)
    for wait in sorted(table["waits"].values(), key=lambda w: w["since"]):
        records.append({"ts": clock.iso(), "kind": "wait", "waiter": wait["waiter"],
                        "scopes": wait["scopes"], "since": wait["since"], "pid": wait["pid"],
                        "blocked_by": sorted({e.holder for e in edges
                                              if e.waiter == wait["waiter"]})})
    if mesh.as_json:
        for record in records:
            jsonl.write(record)
        return
    locks = [r for r in records if r["kind"] == "lock"]
    waits = [r for r in records if r["kind"] == "wait"]
    mesh.table(locks, ["scope", "holder", "state", "generation", "since", "pid"])
    if waits:
        click.echo()
        mesh.table(waits, ["waiter", "scopes", "blocked_by", "since", "pid"])
    if not records:
        click.echo("no locks held")


@file_lock.command("graph", cls=cli.Command)
@cli.mesh_options()
def graph_command(mesh):
    """The wait-for graph as one JSON object: nodes, edges (waiter, scope, holder), cycles."""
    table = _service(mesh).snapshot()
    edges = policy.wait_for_edges(table)
    nodes = sorted({h["holder"] for h in table["locks"].values()}
                   | {w["waiter"] for w in table["waits"].values()})
    jsonl.write({"ts": clock.iso(), "kind": "graph", "nodes": nodes,
                 "edges": [e._asdict() for e in edges],
                 "cycles": [[e._asdict() for e in c] for c in graph.all_cycles(edges)]})


@file_lock.command("run", cls=RunCommand, hidden=True)
@click.argument("paths", nargs=-1, required=True, shell_complete=complete.paths)
@wait_options
@cli.mesh_options(identity=True)
@click.pass_context
def run(ctx, paths, nonblock, timeout, lease, mesh):
    """file-lock [-n|-w S] PATH... -- COMMAND: run COMMAND while holding the scopes."""
    argv = ctx.meta.get("argv")
    if not argv:
        raise click.UsageError("give the command after '--': file-lock PATH... -- COMMAND")
    timeout = _timeout(nonblock, timeout)
    service = _service(mesh)
    targets = service.resolve(list(paths))
    # This process owns the lock: if it dies, even by kill -9, the lock is reclaimable.
    claimant = service.claimant(mesh.session(required=False), owner_pid=os.getpid())
    errors.exit_on_sigterm()
    scopes = [t.scope for t in targets]
    mine = lambda: {s for s in scopes  # noqa: E731
                    if (service.holding(s) or {}).get("holder") == claimant.id}
    already = mine()
    try:  # a SIGTERM may land anywhere from here on, even just after the grant
        service.acquire(claimant, scopes, timeout=timeout, lease=lease,
                        on_wait=_say_waiting())
        code = _run_child(argv)
    finally:
        fresh = sorted(mine() - already)
        if fresh:
            service.release(claimant.id, fresh)
    sys.exit(code)


GUARD_GRACE = 10.0  # a SIGTERM to the guard itself: how long the command gets to end


def _run_child(argv: list[str]) -> int:
    """Run argv in the foreground under the task guard (core/guard.py), forwarding SIGTERM
    and SIGHUP to it and all it started; exit status as a shell does. The guard kills the
    command and everything below it when this process dies, even by kill -9: the lock this
    process anchors is reclaimed then, and a command left running would run beside the next
    holder."""
    import shutil
    import subprocess

    if shutil.which(argv[0]) is None:
        missing = os.sep not in argv[0] or not os.path.exists(argv[0])
        click.echo(f"file-lock: {argv[0]}: "
                   f"{'command not found' if missing else 'permission denied'}", err=True)
        return 127 if missing else 126
    # The forwarder is in place before the command starts: a stop that comes earlier is
    # never lost (that would release the lock while the command ran on without it).
    started, early = [], []

    def forward(signum, _frame):  # to the command and below; the guard ends when it does
        below = started and [p for p in proc.descendants() if p[0] != started[0].pid]
        if below:
            proc.signal_all(below, signum)
            return
        early.append(signum)
        if started:  # the guard has not started the command yet: its SIGHUP ends it all
            started[0].send_signal(signal.SIGHUP)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    if early:  # stopped before anything ran
        return 128 + early[0]
    child = subprocess.Popen(proc.guarded(argv, GUARD_GRACE))
    started.append(child)
    if early:  # stopped while it was starting: the guard's SIGHUP ends all of it at once
        child.send_signal(signal.SIGHUP)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends ^C to the child too
    code = child.wait()
    if early:
        return 128 + early[0]
    return code if code >= 0 else 128 - code
