"""Atomic files and guarded critical sections on the local filesystem.

Writers never leave half a file: write a temp file in the same directory, fsync, rename.
Short critical sections use flock(2), which the kernel drops when the holder dies, so a
kill -9 can never leave the guard stuck.
"""

import contextlib
import fcntl
import json
import os

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_dir(path) -> str:
    path = os.fspath(path)
    try:
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    except FileExistsError:  # a file, not a directory, is in the way
        raise
    return path


def unique_suffix() -> str:
    return f"{os.getpid()}.{os.urandom(4).hex()}"


def atomic_write(path, data: bytes | str, mode: int = FILE_MODE, fsync: bool = True) -> None:
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = f"{path}.tmp.{unique_suffix()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj, **kw) -> None:
    atomic_write(path, json.dumps(obj, separators=(",", ":")) + "\n", **kw)


def read_json(path, default=None):
    """The parsed file, or default when it does not exist."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return default


@contextlib.contextmanager
def flocked(path, shared: bool = False):
    """Hold flock(2) on path (created 0600 if missing) for the duration of the block."""
    fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing drops the lock
