"""Atomic files and guarded critical sections on the local filesystem.

Writers never leave half a file: write a temp file in the same directory, fsync, rename.
Short critical sections use flock(2), which the kernel drops when the holder dies, so a
kill -9 can never leave the guard stuck.
"""

import contextlib
import fcntl
import json
import os
import stat

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_dir(path) -> str:
    """Create path and every missing parent 0700. (os.makedirs gives the parents the
    umask's mode, 0755: a new MESH_HOME and inbox/<id>/ were readable by everyone.) A file
    in the way raises FileExistsError."""
    path = os.fspath(path)
    missing = []
    here = os.path.abspath(path)
    while not os.path.isdir(here):
        missing.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
    return path


def tighten(path) -> int | None:
    """Make a directory of ours that others may enter 0700 (one the user made before the
    mesh did, with the umask's 0755); its old mode when it changed, else None. Another
    user's directory is left alone (core.trust refuses where that matters)."""
    st = os.stat(path)
    if st.st_uid != os.getuid() or not st.st_mode & 0o077:
        return None
    os.chmod(path, DIR_MODE)
    return stat.S_IMODE(st.st_mode)


def create_once(path, data: bytes | str, mode: int = FILE_MODE) -> bool:
    """Create path with data unless it exists, atomically: readers never see it half
    written, and of racing creators exactly one wins. True when this call created it."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{unique_suffix()}"
    atomic_write(tmp, data, mode)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


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
