"""Words for counts in the one-line messages a person reads ("1 task", "3 tasks")."""


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"
