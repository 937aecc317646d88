"""TAB candidates that know the mesh: click `shell_complete=` callbacks, one per kind of word.

Roles and peer ids come from files (roles.toml, the registry); task ids, dead-letter ids
and queue names need Redis, which is imported only in those callbacks, reached with a
short timeout and never started. A TAB must stay fast and quiet: any error offers nothing.
"""

import functools

REDIS_TIMEOUT = 0.2  # seconds to connect and to answer; a TAB is no time to wait
LIMIT = 200  # candidates offered at most (a shell lists them all)


def _quiet(source):
    """A callback that offers source(ctx, incomplete)'s words starting with incomplete,
    sorted, and nothing at all when source fails (no mesh, Redis down, a corrupt file)."""

    @functools.wraps(source)
    def callback(ctx, param, incomplete):
        try:
            words = source(ctx, incomplete)
            return sorted({w for w in words if w.startswith(incomplete)})[:LIMIT]
        except Exception:  # noqa: BLE001 - a TAB never prints a traceback
            return []

    return callback


def _given(ctx, name: str):
    """A common option as the command would see it: typed on the command, else before the
    subcommand (`meshctl --home X peers`), else from the environment; None: the default."""
    from .umbrella import or_umbrella

    return or_umbrella(name, ctx.params.get(name), ctx)


def _home(ctx):
    from .core.home import MeshHome

    return MeshHome.find_any(_given(ctx, "home"))


def _roles(ctx) -> dict:
    from .core import roles

    return roles.load(_home(ctx))


def _peer_ids(ctx) -> list[str]:
    from .coord import registry

    home = _home(ctx)
    return [r["id"] for r in registry.all_sessions(home)] if home else []


def _redis(ctx):
    """(client, names) of the mesh's Redis, if it is up now."""
    from .queue.connection import connect
    from .queue.names import Names

    client = connect(_home(ctx), _given(ctx, "redis_url"), start=False,
                     timeout=REDIS_TIMEOUT)
    return client, Names.from_env(_given(ctx, "namespace"))


def _glob(text: str) -> str:
    """text as a literal Redis MATCH pattern prefix."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@_quiet
def roles(ctx, incomplete):
    return _roles(ctx)


@_quiet
def peers(ctx, incomplete):
    return _peer_ids(ctx)


@_quiet
def recipients(ctx, incomplete):
    """Whom coord-send reaches: a peer, a role's peers, or all."""
    return [*_peer_ids(ctx), *_roles(ctx), "all"]


@_quiet
def task_ids(ctx, incomplete):
    """From the task index (every id pushed and not purged), LIMIT at most."""
    from itertools import islice

    client, names = _redis(ctx)
    scan = client.hscan_iter(names.index, match=_glob(incomplete) + "*", count=1000)
    return [task_id for task_id, _state in islice(scan, LIMIT)]


@_quiet
def traced(ctx, incomplete):
    """What meshctl trace follows: a peer, or a task with a trace (from files, no Redis)."""
    from .executors import trace

    home = _home(ctx)
    return [*_peer_ids(ctx), *(trace.known_tasks(home) if home else [])]


@_quiet
def dead_ids(ctx, incomplete):
    from .queue.broker import Broker, DeadLetters

    return [r["id"] for r in DeadLetters(Broker(*_redis(ctx))).list()]


@_quiet
def queues(ctx, incomplete):
    """The queues the roles drain (no Redis needed), and any other queue Redis holds."""
    words = {"default", *(role.queue for role in _roles(ctx).values())}
    try:
        client, names = _redis(ctx)
        prefix = names.queue_prefix
        for key in client.scan_iter(match=_glob(prefix + incomplete) + "*", count=1000,
                                    _type="stream"):
            words.add(key[len(prefix):])
    except Exception:  # noqa: BLE001 - the roles' queues still help
        pass
    return words


def paths(ctx, param, incomplete):
    """Files and directories: the shell's own completion (repository paths for file-lock)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]
