"""Executors: what runs a task: claude (stream-json), the plain-text agent CLIs, their shared
pieces (base), the one place that picks one by agent name (choose), and what a run leaves
behind: its trace (trace: the per-task stream file) and its reading as steps (steps)."""
