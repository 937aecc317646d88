"""file-lock: mandatory sub-project locks with deadlock detection.

scopes   path -> scope rules (pure) and their resolution against a real worktree
graph    the wait-for graph and its cycles (pure)
table    where the lock table lives (the backend interface and the filesystem backend)
policy   what a grant, a reclaim and a release do to the table (pure)
service  the waits, the events and the process liveness around them
"""
