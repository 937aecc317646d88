"""mesh-supervise: keep an agent running, restart it with backoff, give up on a crash loop.

    mesh-supervise [--role ROLE] [--session ID] [OPTIONS] -- CMD [ARGS...]
    mesh-supervise --stop KEY --spawn ID            stop that spawn (and its supervisor)
    mesh-supervise --restart-child KEY --spawn ID   restart that spawn now

The policy and the control protocol live in meshtools.agents.supervisor; this module only
parses arguments, registers the session and hands the process over to the supervisor
(supervisor.handoff: an exec, so that the long-lived process carries no click).
"""

import os
import signal

import click

from .. import cli, complete
from ..agents import supervisor as sup
from ..core import config, errors, lifecycle

EPILOG = ("Exit codes: the child's status once stopped (143 after SIGTERM), 0 when the child "
          "exits 0 under --restart on-failure, 64 usage, 65 bad key or id, 69 supervisor gone, "
          "75 gave up (FATAL), the key is taken or meshctl down runs, 78 MESH_HOME was deleted "
          "or replaced, 126/127 CMD cannot run.")


# the options config.toml [supervisor] sets through mesh-spawn: their defaults are the schema's
_DEFAULT = {key: spec.default for key, spec in config.SCHEMA["supervisor"].items()}


@cli.command("mesh-supervise", epilog=EPILOG,
             context_settings=dict(cli.CONTEXT_SETTINGS, allow_interspersed_args=False))
@click.argument("argv", nargs=-1, metavar="-- CMD [ARGS...]")
@click.option("--role", metavar="ROLE", shell_complete=complete.roles,
              help="Register a session in this role (pid: this supervisor) before starting; "
                   "unregister it on a clean stop.")
@click.option("--session", metavar="ID",
              help="The session whose heartbeat and phase to keep (with --role: its id; "
                   "default the first free <role>-<n>). Also the control KEY.")
@click.option("--base", type=cli.SECONDS, default=_DEFAULT["base"], show_default=True,
              metavar="S", help="Backoff base: the n-th rapid failure waits base*n^2.")
@click.option("--cap", type=cli.SECONDS, default=_DEFAULT["cap"], show_default=True,
              metavar="S", help="The longest backoff.")
@click.option("--min-uptime", type=cli.SECONDS, default=_DEFAULT["min_uptime"],
              show_default=True, metavar="S", help="A run shorter than this is a rapid failure.")
@click.option("--max-failures", type=click.IntRange(min=1), default=_DEFAULT["max_failures"],
              show_default=True, metavar="K",
              help="Give up (exit 75) at K consecutive rapid failures.")
@click.option("--restart", "restart", type=click.Choice([sup.ALWAYS, sup.ON_FAILURE]),
              default=sup.ALWAYS, show_default=True,
              help="on-failure: an exit 0 ends supervision.")
@click.option("--rerun-delay", type=cli.SECONDS, metavar="S",
              help="A persistent agent: an exit 0 is a finished run, not a failure; run CMD "
                   "again after S seconds.")
@click.option("--grace", type=cli.SECONDS, default=_DEFAULT["grace"], show_default=True,
              metavar="S", help="After forwarding a stop signal, SIGKILL the group after S.")
@click.option("--stop", "stop_key", metavar="KEY",
              help="Send a stop to the supervisor of KEY (a session id or pid-<pid>).")
@click.option("--restart-child", "restart_key", metavar="KEY",
              help="Send a restart to the supervisor of KEY.")
@click.option("--spawn", "spawn_id", metavar="ID",
              help="With --stop/--restart-child: the spawn meant, ignored if no longer "
                   "current (scripts should pass it; default: the current one).")
@cli.mesh_options()
def mesh_supervise(argv, role, session, base, cap, min_uptime, max_failures, restart,
                   rerun_delay, grace,
                   stop_key, restart_key, spawn_id, mesh):
    """Run CMD in its own process group and keep it running.

    A run shorter than --min-uptime is a rapid failure; before restarting after the n-th
    consecutive one the supervisor waits min(base*n^2, cap); at --max-failures it gives up
    (phase FATAL, exit 75). A longer run resets n. SIGTERM/SIGINT/SIGHUP go to CMD's whole
    group, then SIGKILL after --grace; CMD's session (its group, and a job that left the
    group; not a daemon that called setsid) is killed whenever a run ends and on every
    exit path. Each start
    gets a fresh MESH_SPAWN_ID; state is in MESH_HOME/spawns/KEY.json. Records (kind
    "spawn") go to stdout as JSON lines when it is not a terminal.
    """
    if stop_key or restart_key:
        _control(mesh, argv, stop_key, restart_key, spawn_id, role, session)
        return
    if spawn_id:
        raise errors.UsageError("--spawn goes with --stop or --restart-child")
    if not argv:
        raise errors.UsageError("no command: mesh-supervise [OPTIONS] -- CMD [ARGS...]")
    policy = sup.RestartPolicy(base, cap, min_uptime, max_failures, restart, rerun_delay)
    try:
        policy.check()
    except ValueError as e:
        raise errors.UsageError(str(e))
    # meshctl down is held off (and a start while it runs refused) until the supervisor
    # has written the state down finds it by: the lock's fd goes over the exec
    starting = lifecycle.hold_for_start(mesh.home)
    # From the registration on, a stop signal is held (over the exec too) until the
    # supervisor's handlers are in place: it must unregister, never kill a registered pid.
    signal.pthread_sigmask(signal.SIG_BLOCK, sup.FORWARDED)
    try:
        session = _register(mesh, role, session)
        os.set_inheritable(starting, True)
        spec = {"home": mesh.home.path, "argv": list(argv), "policy": policy._asdict(),
                "session": session, "role": role, "grace": grace, "json": mesh.as_json,
                "starting_fd": starting}
        try:
            sup.handoff(cli.prog_name(), spec)
        except OSError:
            if role:
                sup.unregister(mesh.home, session)
            raise
    finally:  # reached only when there was no handoff
        os.close(starting)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, sup.FORWARDED)


def _control(mesh, argv, stop_key, restart_key, spawn_id, role, session) -> None:
    cli.exclusive(("--stop", stop_key), ("--restart-child", restart_key))
    if argv or role or session:
        raise errors.UsageError("--stop/--restart-child take no command, --role or --session")
    key = stop_key or restart_key
    control = sup.STOP if stop_key else sup.RESTART_CHILD
    record = (sup.request(mesh.home, key, control, spawn_id) if spawn_id
              else sup.request_current(mesh.home, key, control))
    mesh.emit(record, f"sent {control} to {record['key']} spawn {record['spawn']}"
                      f"{'' if record['current'] else ' (not current: will be ignored)'}")


def _register(mesh, role: str | None, session: str | None) -> str | None:
    """With --role, this supervisor becomes the session (its pid is the record's pid)."""
    from ..coord import registry
    from ..core.ids import validate_name

    if not role:
        if session and registry.get(mesh.home, validate_name(session, "session id")) is None:
            raise errors.BadInput(f"unknown session {session} (register it, or give --role)")
        return session
    from ..coord.sessions import join

    return join(mesh.home, role, session, os.getpid(), "starting")["id"]
