"""meshctl down against whatever starts a process of the mesh (meshctl init, mesh-spawn, a
supervisor, the mesh-anchor loop, the embedded Redis): one flock, MESH_HOME/lifecycle.lock.

A start holds it shared from before its process exists until the record that down finds the
process by is written (a supervisor's state, the anchor's lock record, Redis's pid file);
meshctl init holds it for its whole boot. Down holds it exclusively from before it reads
the records until it returns. So every process of the mesh is either in the records down
reads (and stopped), or started after down returned: a start while down runs is refused
(75). The kernel drops a lock with its holder, however it dies: no mark is ever stale.
"""

import contextlib
import fcntl
import os

from . import errors, fs

LOCK = "lifecycle.lock"


def path(home) -> str:
    return os.path.join(home.path, LOCK)


def hold_for_start(home) -> int:
    """An fd holding the lock shared (close it once the new process's record is written);
    Busy (75) while meshctl down runs."""
    home.ensure()
    fd = os.open(path(home), os.O_RDWR | os.O_CREAT, fs.FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise errors.Busy(f"meshctl down is stopping the mesh of {home.path}: nothing of it "
                          "starts until that is done") from None
    return fd


@contextlib.contextmanager
def starting(home):
    """Hold off meshctl down while the block starts a process of the mesh and writes its
    record; Busy (75) while a down runs."""
    fd = hold_for_start(home)
    try:
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def stopping(home):
    """meshctl down's hold: waits for the starts under way to be recorded, then refuses
    new ones until the block ends."""
    home.ensure()
    with fs.flocked(path(home)):
        yield
