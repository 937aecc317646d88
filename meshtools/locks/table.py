"""Where the lock table lives.

The table is one small document: {"generation": N, "locks": {scope: holding},
"waits": {waiter: wait}}. A backend offers two things: a consistent snapshot for readers
(the editor gate must be fast and lock-free) and an exclusive read-modify-write for writers.
The filesystem backend serves one machine; a Redis backend (WATCH/MULTI on one key) can
serve several machines behind the same two methods.
"""

import contextlib
import copy
import json
import os
from typing import Iterator, Protocol

from ..core import fs


def empty_table() -> dict:
    return {"generation": 0, "locks": {}, "waits": {}}


class LockTable(Protocol):
    def snapshot(self) -> dict: ...

    def update(self) -> contextlib.AbstractContextManager[dict]: ...


class FileLockTable:
    """table.json, replaced atomically by rename; writers serialise on flock(table.lock).

    flock(2) guards only the few microseconds of a read-modify-write: the kernel drops it
    when its holder dies, so a kill -9 never leaves the table wedged. The table is not
    fsynced: locks name live processes, and after a power loss none of them is alive.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, "table.json")
        self.guard = os.path.join(directory, "table.lock")

    def snapshot(self) -> dict:
        return fs.read_json(self.path) or empty_table()

    @contextlib.contextmanager
    def update(self) -> Iterator[dict]:
        fs.ensure_dir(self.directory)
        with fs.flocked(self.guard):
            before = fs.read_json(self.path) or empty_table()
            table = copy.deepcopy(before)
            yield table
            if table != before:
                fs.atomic_write(self.path, json.dumps(table, separators=(",", ":")), fsync=False)
