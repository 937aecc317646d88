"""Agents: the roles, the agent adapter, worktrees, the supervisor and landing work on main."""
