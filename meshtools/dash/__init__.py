"""The live dashboard (`meshctl dash`): collected snapshots, drawn by pure functions.

view (state and key handling), keys (the one key table), commands (the `:` grammar), peers
(the peer table as data), render (snapshot + view -> screen lines, frame diffs), theme and
text (styling and width-aware cells). None of these touch a terminal: the I/O loop that
reads keys and writes frames lives elsewhere and stays thin.
"""
