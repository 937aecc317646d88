"""Sparklines: a history of numbers as one row of block characters (GPU use, memory)."""

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values, width: int, top: float | None = None) -> str:
    """The last `width` values as ▁..█, scaled to top (default: the largest value), padded
    on the left with spaces while the history is shorter than width. None (a missed sample)
    is a space, so a gap shows as one."""
    if width <= 0:
        return ""
    shown = list(values)[-width:]
    known = [v for v in shown if v is not None]
    scale = top if top is not None else max(known, default=0)
    cells = []
    for value in shown:
        if value is None:
            cells.append(" ")
        elif scale <= 0:
            cells.append(BLOCKS[0])
        else:
            level = round(min(max(value, 0) / scale, 1.0) * (len(BLOCKS) - 1))
            cells.append(BLOCKS[level])
    return " " * (width - len(cells)) + "".join(cells)
