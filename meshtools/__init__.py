"""meshtools: small composable commands that run a mesh of parallel coding agents.

Run as one of its commands, the package exits quietly with 130 on a ^C that lands while the
command is still importing, before cli's exit-code contract runs (which then hands ^C back
to KeyboardInterrupt). Imported as a library, it leaves SIGINT alone.
"""

import _signal  # the C module: signal.py would build its enums on every start-up
import os
import sys

__version__ = "0.1.0"


def _is_command(name: str) -> bool:
    """One of pyproject's [project.scripts] (tests/test_exit_codes.py runs every one)."""
    return name in ("meshctl", "coord", "file-lock") or name.startswith(("coord-", "queue-",
                                                                         "mesh-"))


def _interrupted_at_start(_signum, _frame):
    from .core.errors import INTERRUPTED

    os.write(2, b"interrupted\n")  # the contract's line, as core.errors.guarded prints it
    raise SystemExit(INTERRUPTED)


def _guard_start() -> None:
    name = os.path.basename((getattr(sys, "argv", None) or [""])[0])
    if _is_command(name) and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        try:  # an inherited SIG_IGN (a background job) is kept as it is
            _signal.signal(_signal.SIGINT, _interrupted_at_start)
        except ValueError:  # imported first in another thread: nothing to guard
            pass


_guard_start()
