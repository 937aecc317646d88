"""Agents: the roles, spawns, the supervisor and the anchor. What runs a task is in
meshtools.executors, git landing (worktrees, picks, the work record) in meshtools.landing."""
