"""The live dashboard (`meshctl dash`): collected snapshots, drawn by pure functions.

Data: sources/ (each a small module, pure parsing and deciding with the I/O at the edge) and
collector (runs them on their own cadences; a hung source never delays a frame).
Drawing: view (state and key handling), keys (the one key table), commands (the `:`
grammar), peers (the peer table as data), render (snapshot + view -> screen lines, frame
diffs), theme, text and spark (styling, width-aware cells, sparklines). None of these touch a
terminal: the I/O loop that reads keys and writes frames stays thin.
"""
