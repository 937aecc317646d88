"""What `meshctl execute` enqueues: a task in plain words, routed to a role
(mesh/routing.py), with its lineage (hops, parent) and the lock scopes of the paths it
names. Pure but for scopes_of, which reads the repository and config.toml."""

from typing import Callable, NamedTuple

from ..core import roles as role_defs
from . import routing
from ..core import jsonl
from ..core.errors import BadInput, ConfigError, Refused
from ..core.ids import validate_task_id

TASK_ENV, HOPS_ENV = "MESH_TASK", "MESH_TASK_HOPS"  # exported to a running task's processes

JUDGE_NOTE = ("[For the anchor's own judgement] This task was handed on {hops} times and no "
              "specialist fits it: do it yourself or answer it; do not re-dispatch it.\n\n")
SCOPES_NOTE = ("\n\nLock scopes for this task: {scopes} (file-lock acquire {scopes} before "
               "editing)")


OWN_KEYS = ("hops", "parent", "judge", "scopes", "routed")  # execute's to say, never given


class Lineage(NamedTuple):
    parent: str | None = None  # the running task that hands this one on
    hops: int = 0  # how often the new task has been handed on


def lineage(environ) -> Lineage:
    """The new task's lineage: from inside a running task (MESH_TASK, MESH_TASK_HOPS) its
    parent's hops + 1, else none (hops 0). A malformed variable is a ConfigError (78)."""
    parent = environ.get(TASK_ENV)
    if not parent:
        return Lineage()
    try:
        validate_task_id(parent)
    except BadInput as e:
        raise ConfigError(f"${TASK_ENV}: {e}") from None
    raw = environ.get(HOPS_ENV) or "0"
    if not (raw.isascii() and raw.isdigit()):
        raise ConfigError(f"${HOPS_ENV}={raw!r}: not a count of hand-ons (0 or more)")
    return Lineage(parent, int(raw) + 1)


def read_batch(lines) -> list[tuple[int, dict]]:
    """(line number, record) of stdin: a JSON object per line ({"prompt", "role"?, "id"?,
    ...}), or a line of plain text as the prompt; blank lines skipped. BadInput names the
    line of a malformed one."""
    found = []
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("{"):
            record = jsonl.parse_line(line, n)
        else:
            record = {"prompt": line.strip()} if line.strip() else None
        if record is not None:
            found.append((n, record))
    return found


def compose(text: str, route: routing.Route, scopes: list[str], writes: bool,
            hops: int) -> str:
    """The prompt stored: the anchor's judgement note ahead, the lock scopes for a role that
    writes behind."""
    prompt = text.strip()
    if route.judge:
        prompt = JUDGE_NOTE.format(hops=hops) + prompt
    if scopes and writes:
        prompt += SCOPES_NOTE.format(scopes=" ".join(scopes))
    return prompt


def prepare(raw: dict, roles: dict, rules: dict, lineage: Lineage,
            scopes_for: Callable[[tuple[str, ...]], list[str]], default_role: str | None = None,
            where: str | None = None) -> tuple[dict, routing.Route]:
    """The task to enqueue for raw ({"prompt", "role"?, "id"?, more keys kept}) and its
    route; the task is still to be checked (queue.tasks: normalise, or batch for many).
    The role the task names itself (its `role`, or a leading @role) wins over default_role
    (--role), which wins over routing. BadInput (65) for an empty task or an unknown role;
    Refused (77) where the loop guard ends the chain; both name where (a batch's line)."""
    def bad(why: str, kind=BadInput) -> Exception:
        return kind(f"{where}: {why}" if where else why)

    text = raw.get("prompt")
    if not isinstance(text, str):
        raise bad("needs a string 'prompt'")
    at, text = routing.leading_role(text)
    if not text.strip():
        raise bad("empty task")
    named = raw.get("role") or at or default_role
    if named is not None and named not in roles:
        raise bad(role_defs.unknown(str(named), roles))
    try:
        route = routing.route(text, rules, named, lineage.hops)
    except Refused as e:
        raise bad(str(e), Refused) from None
    scopes = scopes_for(route.paths) if route.paths else []
    given = {k: v for k, v in raw.items() if k not in OWN_KEYS}
    task = {**given, "prompt": compose(text, route, scopes, not roles[route.role].read_only,
                                       lineage.hops),
            "role": route.role, "hops": lineage.hops, "scopes": scopes, "routed": route.reason}
    if lineage.parent:
        task["parent"] = lineage.parent
    if route.judge:
        task["judge"] = True
    return task, route


def plan(given: list[tuple[int, dict]], roles: dict, default_role: str | None,
         lineage: Lineage, scopes_for, batch: bool = False) -> list[tuple[dict, routing.Route]]:
    """Every (line number, raw task) routed and checked: (task, route) pairs, or an error
    before any is used. A batch (stdin) is all or nothing, its errors name the line, and
    one id on two lines is refused."""
    from ..queue import tasks

    if default_role is not None and default_role not in roles:
        raise BadInput(role_defs.unknown(default_role, roles))
    rules = routing.rules_of(roles)
    planned = [prepare(raw, roles, rules, lineage, scopes_for, default_role,
                       f"stdin line {n}" if batch else None) for n, raw in given]
    if batch:
        checked = tasks.batch([(n, task) for (n, _), (task, _) in zip(given, planned)], {})
    else:
        checked = [tasks.normalise(task) for task, _ in planned]
    return [(task, route) for task, (_, route) in zip(checked, planned)]


def queued(home, given: list[tuple[int, dict]], default_role: str | None, lineage: Lineage,
           batch: bool = False) -> list[tuple[dict, routing.Route, str]]:
    """(task, route, queue) for each raw task: planned (routed and checked) with the
    mesh's roles and lock scopes (home None: outside a mesh, no scopes), and its role's
    queue. What `meshctl execute` and the dash's `:exec` push."""
    known = role_defs.load(home)
    scopes_for = (lambda paths: scopes_of(home, paths)) if home else (lambda _: [])
    planned = plan(given, known, default_role, lineage, scopes_for, batch=batch)
    return [(task, route, role_defs.queue_of(known, task["role"])) for task, route in planned]


def pushed(record: dict) -> dict:
    """What a push's reply adds to the route record: queue, entry, a duplicate's state."""
    return {k: record[k] for k in ("queue", "entry", "duplicate", "state") if k in record}


def unattended(queue: str, role: str, live_workers: list[str], sessions: list[dict]) -> str | None:
    """The warning for a task enqueued where no live worker drains its queue (naming the
    role's sessions that are registered but dead), or None when one does."""
    if live_workers:
        return None
    dead = sorted(s["id"] for s in sessions if s.get("role") == role
                  and s.get("state") in ("dead", "FATAL"))
    named = f" ({', '.join(dead)} {'is' if len(dead) == 1 else 'are'} dead)" if dead else ""
    return (f"warning: no live worker drains queue {queue}{named}: the task waits until one "
            f"runs (meshctl init, or mesh-spawn {role} --queue)")


def warnings_for(home, broker, planned: list[tuple[dict, routing.Route, str]]) -> list[str]:
    """One unattended() warning per queue the tasks went to that no live worker drains."""
    from ..coord import registry
    from ..queue.stats import live_consumers

    sessions = [dict(r, state=registry.peer_state(r, registry.DEFAULT_STUCK_AFTER))
                for r in (registry.classify(home, r) for r in registry.all_sessions(home))]
    found, seen = [], set()
    for task, _, queue in planned:
        if queue not in seen:
            seen.add(queue)
            line = unattended(queue, task["role"], live_consumers(broker, queue), sessions)
            found += [line] if line else []
    return found


def scopes_of(home, paths) -> list[str]:
    """The lock scopes of the paths a task names, as file-lock resolves them (manifests,
    config.toml rules), taken from the repository's root; a path outside it is ignored."""
    from ..locks import scopes

    resolve = scopes.resolver(home, home.repository().root)
    found = []
    for path in paths:
        try:
            scope = resolve(path).scope
        except BadInput:
            continue
        if scope not in found:
            found.append(scope)
    return found


def progress(sessions: list[dict], task_id: str, elapsed: float) -> str:
    """The live line of a followed task: the peer that runs it and its phase, or queued."""
    for session in sessions:
        if session.get("task") == task_id:
            return f"{task_id}: {session.get('id')} {session.get('phase') or 'running'}, " \
                   f"{int(elapsed)}s"
    return f"{task_id}: queued, {int(elapsed)}s"


def exit_status(result: dict) -> int:
    """What `execute --wait` exits with: 0 for ok, else the task's own exit code when it is
    one a shell passes on (1..125), else 1."""
    if result.get("status") == "ok":
        return 0
    code = result.get("exit_code")
    return code if isinstance(code, int) and not isinstance(code, bool) and 1 <= code <= 125 \
        else 1
