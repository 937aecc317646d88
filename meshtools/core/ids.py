"""Identifiers that become file names are validated here and nowhere else."""

import re

from .errors import BadInput

# Peer ids and roles: a letter or digit first, so nothing starts with '.' or '-'.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Task ids: longer, and '~' too, for the anchor's hand-backs (`<id>~<n>`) and ids that
# embed a role and a period (`standing-<role>-<period>`). Still one safe file name.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")
# Lock scopes: repository-relative directories ("crates/core"), or "." for the root.
_SEGMENT = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9._@+-]{0,127}")
ROOT_SCOPE = "."
MAX_SCOPE = 255


def validate_name(value: str, what: str = "id") -> str:
    """Return value if it is a safe peer id or role name, else raise BadInput (exit 65)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise BadInput(f"invalid {what} {value!r}: use 1-64 of A-Z a-z 0-9 . _ - "
                       "starting with a letter or digit")
    return value


def validate_task_id(value: str) -> str:
    """Return value if it is a valid task id, else raise BadInput (exit 65). The one rule
    for every producer (queue-push, hand-backs, dead-letter retry) and every consumer (the
    worker, MESH_HOME/tasks/<id>/), so no id is accepted by one and refused by another."""
    if not isinstance(value, str) or not _TASK_ID.fullmatch(value) or ".." in value:
        raise BadInput(f"invalid task id {value!r}: use 1-128 of A-Z a-z 0-9 . _ - ~ "
                       "starting with a letter or digit")
    return value


def validate_scope(value: str) -> str:
    if value == ROOT_SCOPE:
        return value
    if (not isinstance(value, str) or not value or len(value) > MAX_SCOPE
            or not all(_SEGMENT.fullmatch(s) and s not in (".", "..")
                       for s in value.split("/"))):
        raise BadInput(f"invalid lock scope {value!r}")
    return value


def scope_filename(scope: str) -> str:
    """A scope as one file name: '/' cannot occur in a segment, '%' in no scope at all."""
    validate_scope(scope)
    return "%2E" if scope == ROOT_SCOPE else scope.replace("/", "%2F")
