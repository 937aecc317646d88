"""The `:` command mode's grammar, pure: a line becomes an action (plain data for the I/O
loop to run) or BadInput with one line; TAB completion from what the snapshot knows; the
history, de-duplicated, and its file in MESH_HOME."""

from dataclasses import dataclass

from ..core.errors import BadInput, did_you_mean

DEFAULT_PAUSE = "1h"  # `:pause` alone
HISTORY_FILE = "dash-history"
HISTORY_MAX = 500
PAUSE_WORDS = ("15m", "30m", "1h", "6h", "1d")  # what `:pause <TAB>` offers


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    complete: str | None  # what its first argument completes from (a Known field)


COMMANDS = {c.name: c for c in (
    Command("exec", "exec [ROLE] TASK", "roles"),
    Command("send", "send PEER MSG", "targets"),
    Command("kill", "kill PEER", "peers"),
    Command("restart", "restart PEER", "peers"),
    Command("pick", "pick TASK", "tasks"),
    Command("pause", "pause [DURATION]", "durations"),
    Command("resume", "resume", None),
    Command("retry", "retry DEAD_ID", "dead"),
)}


@dataclass(frozen=True)
class Known:
    """What completion and checks draw on, from the snapshot."""
    roles: tuple = ()
    peers: tuple = ()
    tasks: tuple = ()
    dead: tuple = ()
    durations: tuple = PAUSE_WORDS

    @property
    def targets(self) -> tuple:  # coord-send reaches a peer, a role's peers, or all
        return (*self.peers, *self.roles, "all")

    @classmethod
    def of(cls, snapshot: dict) -> "Known":
        """Roles from snapshot['roles'] (the mesh's roles) and the peers' roles; task ids
        from the peers' current tasks and the events; dead-letter ids from dead.ids."""
        peers = snapshot.get("peers") or []
        tasks = [p.get("task") for p in peers]
        tasks += [e.get("task") or e.get("id") for e in snapshot.get("events") or []
                  if isinstance(e, dict) and str(e.get("event", "")).startswith("task.")]
        return cls(roles=_unique([*(snapshot.get("roles") or []),
                                  *(p.get("role") for p in peers)]),
                   peers=_unique(p.get("id") for p in peers),
                   tasks=_unique(reversed(tasks)),  # newest first
                   dead=_unique((snapshot.get("dead") or {}).get("ids") or []))


def _unique(values) -> tuple:
    return tuple(dict.fromkeys(str(v) for v in values if v))


def parse(line: str, known: Known) -> dict:
    """A command line (without its ':') as an action: {"cmd": name, ...arguments}."""
    words = line.split()
    if not words:
        raise BadInput("empty command (commands: " + ", ".join(COMMANDS) + ")")
    name, args = words[0], words[1:]
    if name not in COMMANDS:
        raise BadInput(f"unknown command {name!r}{did_you_mean(name, COMMANDS)}")
    return _PARSERS[name](args, known)


def _exec(args, known):
    """A first word that is a role routes the task there; one that is nearly a role (and
    a task follows) is a typo, refused rather than sent to the router as the task's text."""
    role = None
    if args and args[0] in known.roles:
        role, args = args[0], args[1:]
    elif len(args) > 1 and (hint := did_you_mean(args[0], known.roles, cutoff=0.75)):
        raise BadInput(f"unknown role {args[0]!r}{hint}")
    if not args:
        raise BadInput("empty task: exec [ROLE] TASK")
    return {"cmd": "exec", "role": role, "task": " ".join(args)}


def _send(args, known):
    if not args:
        raise BadInput("send PEER MSG: whom?")
    _known(args[0], known.targets, "peer")
    if len(args) < 2:
        raise BadInput("empty message: send PEER MSG")
    return {"cmd": "send", "to": args[0], "message": " ".join(args[1:])}


def _peer_command(name):
    def parse_peer(args, known):
        _arity(name, args, 1)
        return {"cmd": name, "peer": _known(args[0], known.peers, "peer")}
    return parse_peer


def _pick(args, known):
    from ..core.ids import validate_task_id

    _arity("pick", args, 1)
    return {"cmd": "pick", "task": validate_task_id(args[0])}


def _pause(args, known):
    from ..core.roles import parse_duration

    if len(args) > 1:
        raise BadInput("too many words: pause [DURATION]")
    try:
        seconds = parse_duration(args[0] if args else DEFAULT_PAUSE)
    except ValueError as e:
        raise BadInput(f"pause: {e}") from None
    return {"cmd": "pause", "seconds": seconds}


def _resume(args, known):
    _arity("resume", args, 0)
    return {"cmd": "resume"}


def _retry(args, known):
    _arity("retry", args, 1)
    return {"cmd": "retry", "id": args[0]}


_PARSERS = {"exec": _exec, "send": _send, "kill": _peer_command("kill"),
            "restart": _peer_command("restart"), "pick": _pick, "pause": _pause,
            "resume": _resume, "retry": _retry}


def _arity(name, args, count):
    if len(args) != count:
        raise BadInput(f"usage: {COMMANDS[name].usage}")


def _known(word, names, what):
    if word not in names:
        raise BadInput(f"unknown {what} {word!r}{did_you_mean(word, names)}")
    return word


def candidates(line: str, known: Known) -> list[str]:
    """Whole lines that complete `line`: the command word first, then the first argument
    from what that command takes (roles, peers, task ids, ...)."""
    words = line.split(" ")
    if len(words) == 1:
        return [f"{name} " for name in COMMANDS if name.startswith(words[0])]
    command = COMMANDS.get(words[0])
    if len(words) != 2 or command is None or command.complete is None:
        return []
    return [f"{words[0]} {value} " for value in getattr(known, command.complete)
            if value.startswith(words[1])]


def suggestion(line: str, known: Known) -> str:
    """The inline ghost text: what TAB would add to line ('' for none)."""
    found = candidates(line, known)
    return found[0][len(line):] if found else ""


def remember(history: tuple, line: str, limit: int = HISTORY_MAX) -> tuple:
    """History with line as the newest entry, once (an older copy goes); a line that
    starts with a space is not recorded, as in a shell."""
    if not line.strip() or line.startswith(" "):
        return history
    return (*(h for h in history if h != line), line)[-limit:]


def load_history(home) -> tuple:
    try:
        with open(home.sub(HISTORY_FILE), encoding="utf-8") as f:
            return tuple(line.rstrip("\n") for line in f if line.strip())[-HISTORY_MAX:]
    except FileNotFoundError:
        return ()


def save_history(home, history: tuple) -> None:
    """Written atomically, 0600: commands may name peers and tasks."""
    from ..core import fs

    fs.ensure_dir(home.path)
    fs.atomic_write(home.sub(HISTORY_FILE), "".join(f"{h}\n" for h in history),
                    mode=fs.FILE_MODE, fsync=False)
