"""Executors: what runs a task: claude (stream-json), the plain-text agent CLIs, their shared
pieces (base) and the one place that picks one by agent name (choose)."""
