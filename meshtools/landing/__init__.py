"""Git landing: git run unattended (gitops), one worktree per role (worktree), what main's
history says about a branch (history), the cherry-pick onto main (pick) and the commits a
task made (work)."""
