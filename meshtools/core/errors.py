"""Exit codes (sysexits, see CONVENTIONS) and the errors that carry them.

Library code raises a MeshError subclass; the CLI layer prints its message as one line on
stderr and exits with its code. Nothing else turns into an exit status.
"""

OK = 0
NEGATIVE = 1  # a documented "no" (e.g. file-lock check: not yours)
USAGE = 64
DATAERR = 65
UNAVAILABLE = 69
SOFTWARE = 70
TEMPFAIL = 75
NOPERM = 77
CONFIG = 78
INTERRUPTED = 130


class MeshError(Exception):
    exit_code = SOFTWARE


class Negative(MeshError):
    exit_code = NEGATIVE


class UsageError(MeshError):
    exit_code = USAGE


class BadInput(MeshError):
    exit_code = DATAERR


class Unavailable(MeshError):
    exit_code = UNAVAILABLE


class Busy(MeshError):
    """Worth retrying: a lock or id is held, or a wait timed out."""

    exit_code = TEMPFAIL


class Refused(MeshError):
    exit_code = NOPERM


class ConfigError(MeshError):
    exit_code = CONFIG
