"""Each session's inbox, delivered Maildir-style so that nothing is half-read or lost.

inbox/<id>/{tmp,new,cur}: a sender writes the whole message into tmp/, fsyncs, and renames
it into new/; a reader claims a message by renaming it from new/ to cur/ before reading, so
of two concurrent readers exactly one gets it. Inboxes live beside the registry, not in it:
messages wait for a session that restarts under the same id.
"""

import os
import time

from ..core import clock, fs, jsonl
from ..core.errors import BadInput
from ..core.home import MeshHome
from ..core.ids import validate_name

BOXES = ("tmp", "new", "cur")


def _box(home: MeshHome, session_id: str, box: str) -> str:
    return os.path.join(home.inboxes, validate_name(session_id, "peer id"), box)


def message(sender: str, to: str, body: str | None = None, data: dict | None = None) -> dict:
    """A message record, its body or data redacted (core.redact): the inbox is a file that
    a peer reads into its prompt and transcript, and the sender prints the record too."""
    from ..core.redact import redact

    name = f"{time.time_ns()}.{fs.unique_suffix()}"
    record = {"ts": clock.iso(), "kind": "message", "id": name, "from": sender, "to": to}
    if data is not None:
        record["data"] = redact(data)
    else:
        record["body"] = redact(body)
    return record


def deliver(home: MeshHome, record: dict) -> str:
    """Write one message into its recipient's new/; returns the path."""
    for box in BOXES:
        home.ensure(home.inboxes, record["to"], box)
    tmp = os.path.join(_box(home, record["to"], "tmp"), record["id"])
    fs.atomic_write(tmp, jsonl.dumps(record) + "\n")
    final = os.path.join(_box(home, record["to"], "new"), record["id"])
    os.rename(tmp, final)
    return final


def _names(directory: str) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(directory) if e.is_file() and "." in e.name
                      and not e.name.startswith("."))
    except FileNotFoundError:
        return []


def _read(path: str, warn) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            record = jsonl.parse_line(f.read(), 1, path)
        if record is None:
            raise ValueError("empty message")
        return record
    except FileNotFoundError:
        return None
    except (BadInput, ValueError, UnicodeDecodeError) as e:
        warn(f"malformed message {path} moved aside: {e}")
        bad = os.path.join(os.path.dirname(os.path.dirname(path)), "bad")
        fs.ensure_dir(bad)
        os.replace(path, os.path.join(bad, os.path.basename(path)))
        return None


def receive(home: MeshHome, session_id: str, peek: bool = False, limit: int | None = None,
            warn=lambda _m: None):
    """New messages, oldest first. Unless peeking, each is claimed (new/ -> cur/) before it
    is read; a message another reader claimed first is skipped."""
    new, cur = _box(home, session_id, "new"), _box(home, session_id, "cur")
    taken = 0
    for name in _names(new):
        if limit is not None and taken >= limit:
            return
        source = os.path.join(new, name)
        if not peek:
            target = os.path.join(cur, name)
            try:
                os.rename(source, target)
            except FileNotFoundError:
                continue  # another reader claimed it
            source = target
        record = _read(source, warn)
        if record is not None:
            taken += 1
            yield record


def read_messages(home: MeshHome, session_id: str, warn=lambda _m: None):
    """Messages already claimed (cur/), oldest first, marked read."""
    cur = _box(home, session_id, "cur")
    for name in _names(cur):
        record = _read(os.path.join(cur, name), warn)
        if record is not None:
            yield dict(record, read=True)


def follow(home: MeshHome, session_id: str, warn=lambda _m: None, poll: float = 0.05):
    """Claim and yield messages as they arrive, forever."""
    while True:
        got = False
        for record in receive(home, session_id, warn=warn):
            got = True
            yield record
        if not got:
            time.sleep(poll)


def person() -> str:
    """The sender a person at a terminal is: user@host."""
    from ..core import proc

    return f"{os.environ.get('USER', 'user')}@{proc.hostname()}"


def targets(home: MeshHome, to: str, sender: str) -> list[str]:
    """The session ids a message to `to` reaches now (recipients over the registry), or
    BadInput: unknown peer, or no live peer of that role (or none at all for `all`)."""
    from ..core import roles
    from . import registry

    sessions = [registry.classify(home, r) for r in registry.all_sessions(home)]
    found = recipients(sessions, to, sender)
    if found:
        return found
    if to == "all":
        raise BadInput("no live peer to send to")
    if found is None and to not in roles.load(home):
        raise BadInput(f"unknown peer {to!r}")
    raise BadInput(f"no live peer has the role {to!r}")


def post(home: MeshHome, sender: str, to: list[str], payloads: list[dict]) -> list[dict]:
    """Every payload ({body} or {data}) to every target: the messages, each built (and
    checked) before any is delivered, then delivered with its message.sent event."""
    from ..core import events

    records = [message(sender, target, **payload) for target in to for payload in payloads]
    for record in records:
        deliver(home, record)
        events.emit(home, "message.sent", id=record["id"], to=record["to"], sender=sender,
                    size=len(jsonl.dumps(record)))
    return records


def recipients(sessions: list[dict], to: str, sender: str | None) -> list[str] | None:
    """Who a message to `to` reaches, from classified session records: a registered id (even
    a dead one: the message waits for its next start) wins; then `all` or a role, meaning
    their non-dead sessions other than the sender. None: no such peer or role."""
    if any(s["id"] == to for s in sessions):
        return [to]
    if to != "all" and not any(s.get("role") == to for s in sessions):
        return None
    return [s["id"] for s in sessions if s.get("state") != "dead" and s["id"] != sender
            and (to == "all" or s.get("role") == to)]
