"""The shared core: state paths, JSON lines, exit codes, atomic files, ids, events.

Every module here is cheap to import: each command pays for it on every pipe stage.
"""
