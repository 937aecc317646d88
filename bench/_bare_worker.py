"""The floor for bench/taskqueue.py: the least a stream worker can do per task (XREADGROUP ->
subprocess -> XADD result + XACK), as a process of its own, the way queue-drain runs.

    python bench/_bare_worker.py REDIS_URL CONSUMER
"""

import json
import subprocess
import sys

import redis


def main(url: str, consumer: str) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    while True:
        reply = r.xreadgroup("bare", consumer, {"tasks:queue:default": ">"}, count=1, block=200)
        if not reply:
            return
        entry, fields = reply[0][1][0]
        task = json.loads(fields["task"])
        code = subprocess.run(["/bin/sh", "-c", task["prompt"]]).returncode
        pipe = r.pipeline(transaction=True)
        pipe.xadd("tasks:results", {"result": json.dumps({"id": task["id"], "exit": code})})
        pipe.xack("tasks:queue:default", "bare", entry)
        pipe.execute()


if __name__ == "__main__":
    main(*sys.argv[1:3])
