"""What every command shares: the exit-code contract, the common options, the output switch.

Commands are click objects built with `command()` / `group()` from here, so a usage error
exits 64 instead of click's 2, a MeshError becomes one line on stderr and its exit code, a
broken pipe exits quietly with 141 (as a C filter killed by SIGPIPE would), ^C exits 130
and SIGTERM 143 (exit_on_sigterm). One click object serves both the standalone entry point
(`coord-send`) and the umbrella's subcommand (`meshctl send`).
"""

import functools
import os
import sys

import click

from . import complete
from .core import errors, jsonl
from .core.home import MeshHome
from .umbrella import UMBRELLA, or_umbrella

SESSION_ENV = "MESH_SESSION"
MESH = "meshtools.mesh"  # ctx.meta key: the invocation's Mesh, for _Contract.invoke


def prog_name() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.command_path if ctx else os.path.basename(sys.argv[0])


class _Contract:
    """Mixin: run click in non-standalone mode and map every outcome to an exit code."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        _take_over_sigint()

        def run():
            try:
                return super(_Contract, self).main(args=text_arguments(args),
                                                   prog_name=prog_name,
                                                   standalone_mode=False, **extra)
            except click.UsageError as e:
                e.show()
                return errors.USAGE
            except click.ClickException as e:
                e.show()
                return e.exit_code
            except click.Abort:
                raise KeyboardInterrupt from None

        sys.exit(errors.guarded(prog_name or os.path.basename(sys.argv[0]), run))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError as e:  # click's main() would swallow it and exit 1
            raise errors.ReaderGone() from e
        except Exception as e:
            mesh = ctx.meta.get(MESH)
            failure = mesh and mesh.lost_to_disk(e)
            if failure:
                raise failure from None
            raise

    def get_short_help_str(self, limit: int = 45) -> str:
        """The whole first sentence in a group's command list: click cuts it to one line
        with "...", where the help formatter would wrap it."""
        return super().get_short_help_str(limit=max(limit, 1000))


def text_arguments(args=None) -> list:
    """args (sys.argv[1:] when None), refusing one that is not UTF-8 (65): Python hands its
    undecodable bytes in as lone surrogates (surrogateescape), which click passes on, and
    the first write of one (a JSON record, Redis) failed as a bug (70) or stored U+FFFD in
    its place."""
    args = sys.argv[1:] if args is None else list(args)
    for n, arg in enumerate(args, 1):
        try:
            arg.encode()
        except UnicodeEncodeError:
            shown = arg.encode(errors="surrogateescape").decode(errors="backslashreplace")
            raise errors.BadInput(f"argument {n} is not UTF-8 text: '{shown}'") from None
    return args


def _take_over_sigint() -> None:
    """From here a ^C is a KeyboardInterrupt that unwinds (finally blocks run) and that the
    contract turns into 130; until now the package's start-up guard exited at once."""
    import _signal  # not signal.py, whose enums cost every command's start-up

    from . import _interrupted_at_start

    if _signal.getsignal(_signal.SIGINT) is _interrupted_at_start:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)


class Command(_Contract, click.Command):
    pass


class Group(_Contract, click.Group):
    command_class = Command
    group_class = type

    def resolve_command(self, ctx, args):
        """click's "No such command 'peer'." with a did-you-mean ('peers'), as for roles."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            hint = errors.did_you_mean(args[0], self.list_commands(ctx)) if args else ""
            if not hint or self.get_command(ctx, args[0]) is not None:
                raise
            raise click.UsageError(f"No such command {args[0]!r}{hint}", ctx) from e


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def command(name=None, **kw):
    kw.setdefault("context_settings", CONTEXT_SETTINGS)
    return click.command(name, cls=Command, **kw)


def group(name=None, **kw):
    kw.setdefault("context_settings", CONTEXT_SETTINGS)
    return click.group(name, cls=Group, **kw)


class Mesh:
    """Per-invocation state: which mesh, who is calling, how to print."""

    def __init__(self, home: str | None, as_json: bool, session: str | None = None,
                 redis_url: str | None = None, namespace: str | None = None):
        self._home_arg = home
        self.as_json = as_json or not sys.stdout.isatty()
        self._session = session
        self.redis_url = redis_url
        self.namespace = namespace

    def broker(self, blocking: bool = False, start: bool = True, loaded: bool = True):
        """The queue broker on a checked connection (redis-py is imported only here);
        start=False: never start the embedded Redis for it (Unavailable if it is down);
        loaded=False: do not wait for a Redis still loading its data (connection.connect)."""
        from .queue.broker import Broker
        from .queue.connection import connect
        from .queue.names import Names

        names = Names.from_env(self.namespace)
        return Broker(connect(self.home, self.redis_url, blocking=blocking, start=start,
                              loaded=loaded), names)

    def lost_to_disk(self, error: Exception) -> errors.DiskError | None:
        """error is the mesh's own Redis gone mid-command because its disk is full (74,
        not 69: see queue.connection.lost_to_disk); None otherwise, and for another Redis."""
        if "redis" not in sys.modules or self.redis_url or os.environ.get("MESH_REDIS_URL"):
            return None
        from .queue.connection import lost_to_disk

        return lost_to_disk(error, self.home)

    @functools.cached_property
    def home(self) -> MeshHome:
        return MeshHome.find(self._home_arg)

    @functools.cached_property
    def home_if_any(self) -> MeshHome | None:
        """The home, or None outside a repository without --home/$MESH_HOME (a command
        that needs no mesh, such as mesh-roles, still works there)."""
        return MeshHome.find_any(self._home_arg)

    def session(self, required: bool = True) -> str | None:
        from .core.ids import validate_name

        sid = self._session or os.environ.get(SESSION_ENV)
        if sid is None or sid == "":
            if required:
                raise errors.UsageError(f"who is calling? pass --as ID or set ${SESSION_ENV}")
            return None
        return validate_name(sid, "session id")

    def emit(self, record: dict, human: str | None = None) -> None:
        """One record: a JSON line when piped or --json, else the human line if given."""
        if self.as_json or human is None:
            jsonl.write(record)
        else:
            click.echo(human)

    def tell(self, human: str) -> None:
        """A line for a person at a terminal (a long-running command saying it has started
        and what it waits for); nothing when piped: there stdout carries records only."""
        if not self.as_json:
            click.echo(human)

    def table(self, records: list[dict], columns: list[str]) -> None:
        if self.as_json:
            for record in records:
                jsonl.write(record)
            return
        if not records:
            return
        from tabulate import tabulate

        rows = [[_cell(r.get(c)) for c in columns] for r in records]
        click.echo(tabulate(rows, headers=[c.upper() for c in columns], tablefmt="plain"))


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return value


COMMON_OPTIONS = {  # name: (declarations, attributes), for mesh_options and the umbrella
    "home": (("--home",), {"metavar": "DIR", "help": "Mesh state directory."}),
    "as_json": (("--json", "as_json"), {"is_flag": True,
                                        "help": "JSON lines even on a terminal."}),
    "redis_url": (("--redis-url",), {"metavar": "URL", "help": "Redis to use (default: the "
                                                                "mesh's embedded server)."}),
    "namespace": (("--namespace",), {"metavar": "NAME", "help": "Prefix for every Redis key "
                                                                 "(several meshes, one Redis)."}),
}


def _common_option(name: str, **extra):
    declarations, attributes = COMMON_OPTIONS[name]
    return click.option(*declarations, **attributes, **extra)


def mesh_options(identity: bool = False, redis: bool = False):
    """The options every command takes: --home, --json; --as for commands that act as a
    session; --redis-url and --namespace for those that use the queue. The decorated
    function receives `mesh` instead of them; `meshctl` takes them before the subcommand
    too (umbrella_options)."""

    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, home, as_json, as_id=None, redis_url=None, namespace=None, **kwargs):
            home, redis_url, namespace = (or_umbrella(name, value) for name, value in (
                ("home", home), ("redis_url", redis_url), ("namespace", namespace)))
            as_json = as_json or bool(or_umbrella("as_json", False))
            mesh = Mesh(home, as_json, as_id, redis_url, namespace)
            click.get_current_context().meta[MESH] = mesh
            return f(*args, mesh=mesh, **kwargs)

        if redis:
            wrapper = _common_option("namespace", envvar="MESH_NAMESPACE")(wrapper)
            wrapper = _common_option("redis_url", envvar="MESH_REDIS_URL")(wrapper)
        wrapper = _common_option("as_json")(wrapper)
        wrapper = _common_option("home", envvar="MESH_HOME", show_envvar=True)(wrapper)
        if identity:
            wrapper = click.option("--as", "as_id", metavar="ID", shell_complete=complete.peers,
                                   help=f"Act as this session (default ${SESSION_ENV}).")(wrapper)
        return wrapper

    return decorate


def umbrella_options(f):
    """The common options before the subcommand too (`meshctl --home X peers` is `meshctl
    peers --home X`): kept in ctx.meta, which every subcommand's context shares, for
    mesh_options to fall back to."""

    def remember(ctx, param, value):
        if value is not None and value is not False:
            ctx.meta.setdefault(UMBRELLA, {})[param.name] = value

    for name in ("namespace", "redis_url", "as_json", "home"):
        f = _common_option(name, expose_value=False, callback=remember)(f)
    return f


def exclusive(*options: tuple[str, object]) -> None:
    """A usage error (64) when more than one of these (flag, value) options was given (a
    value other than None or False: -w 0 is given)."""
    given = [flag for flag, value in options if value is not None and value is not False]
    if len(given) > 1:
        raise errors.UsageError(f"{' and '.join(given)} exclude each other")


def stdin_lines():
    """stdin as text lines, refusing an interactive terminal where records were promised."""
    if sys.stdin is None or sys.stdin.isatty():
        raise errors.UsageError("'-' reads JSON lines from stdin, but stdin is a terminal")
    return sys.stdin


class Seconds(click.ParamType):
    """A finite, non-negative number of seconds (positive=True: more than 0; minimum: at
    least that). float() takes 'nan', 'inf' and '-1', and so does click.FloatRange: a NaN
    wait never ends and a NaN lease is not even JSON."""

    name = "seconds"

    def __init__(self, positive: bool = False, minimum: float = 0.0):
        self.positive = positive
        self.minimum = minimum

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        import math

        if (not math.isfinite(number) or number < self.minimum
                or (self.positive and number == 0)):
            least = ("more than 0" if self.positive and not self.minimum
                     else f"{self.minimum:g} or more")
            self.fail(f"{value!r} is not a finite number of seconds, {least}", param, ctx)
        return number


SECONDS = Seconds()
