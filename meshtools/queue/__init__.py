"""The Redis task queue: fan-out to queue-drain workers, results, dead letters.

names       every Redis key the mesh uses, under an optional namespace (pure)
tasks       what a task is: validation and normalisation (pure)
server      the mesh's embedded redis-server (a real process on a unix socket)
connection  reaching Redis: --redis-url, $MESH_REDIS_URL, or the embedded server
broker      the queue operations, each state change atomic in a Lua script
results     reading tasks:results: list, follow, wait for one task (the broker writes)
stats       per-queue records (XINFO, XPENDING) for queue-stat and the dashboard
executor    how a task runs: the shell executor and what every executor shares
worker      the drain loop: read, execute, record + ACK, heartbeat, reclaim
"""
