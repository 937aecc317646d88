"""Reading tasks:results: the one reader of the results stream, as rq's Result owns
`fetch_latest`. The one writer is the broker's FINISH script (a result and its XACK in one
atomic step); queue-results and the anchor read through here.

A result is the `result` field of a stream entry: the task's record as JSON.
"""

import json
import time

from ..core import errors

WAIT_SLICE_MS = 1000  # longest single XREAD of wait(): the index is looked at between them


def record_of(fields: dict) -> dict:
    return json.loads(fields["result"])


class Results:
    def __init__(self, broker):
        self.redis = broker.redis
        self.names = broker.names

    def follow(self, after: str = "0-0", block: int | None = None,
               count: int | None = None) -> list[tuple[str, dict]]:
        """(entry id, result) for the results after entry `after`, oldest first, at most
        `count`; when there are none, wait up to `block` ms for one (None: never wait)."""
        reply = self.redis.xread({self.names.results: after}, count=count, block=block)
        return [(entry, record_of(fields))
                for _, entries in reply or [] for entry, fields in entries]

    def wait(self, task_id: str, timeout: float | None = None) -> dict:
        """The final result of task_id, waiting for it up to `timeout` seconds (None: for
        ever). BadInput for an id never pushed, Busy when the time runs out, Unavailable
        when its result was trimmed from the stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = "$"  # results recorded from now on; earlier ones are found by the index
        while True:
            found = self.final(task_id)
            if found is not None:
                return found
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise errors.Busy(f"task {task_id} has no result after {timeout:g}s")
            block = WAIT_SLICE_MS if left is None else max(1, min(WAIT_SLICE_MS, int(left * 1000)))
            for last, record in self.follow(last, block):
                if record["id"] == task_id:
                    return record

    def final(self, task_id: str) -> dict | None:
        """The task's recorded result, found through tasks:index; None while it has none."""
        state = self.redis.hget(self.names.index, task_id)
        if state is None:
            raise errors.BadInput(f"unknown task {task_id!r}")
        if not state.startswith(("done:", "dead:")):
            return None
        entry = state.split(":", 1)[1]
        found = self.redis.xrange(self.names.results, entry, entry)
        if not found:
            raise errors.Unavailable(f"the result of {task_id} was trimmed from "
                                     f"{self.names.results}")
        return record_of(found[0][1])
