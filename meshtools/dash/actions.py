"""What the dash's `:` commands do: each action (view.handle's plain data) run through the
same core call as its command line twin, its outcome as the one message line. The dash runs
them off its UI thread; nothing here draws."""

import time

from ..agents.supervisor.control import RESTART_CHILD, STOP
from ..core.errors import MeshError

BY = "meshctl dash"  # who paused, resumed, sent


def run(action: dict, home, link) -> str:
    """The action's outcome in one line; a MeshError's message is the line (the dash
    keeps running); anything else propagates to the caller, which shows it too."""
    try:
        return _ACTIONS[action["cmd"]](action, home, link)
    except MeshError as e:
        return f"{action['cmd']}: {e}"


def _exec(action, home, link):
    """As `meshctl execute [--role ROLE] TASK`."""
    from ..mesh import dispatch

    planned = dispatch.queued(home, [(1, {"prompt": action["task"]})], action.get("role"),
                              dispatch.Lineage())
    (task, route, queue), = planned
    record, = link.broker().push([(task, queue)])
    extra = dispatch.pushed(record)
    duplicate = f" (duplicate: {extra.get('state')})" if extra.get("duplicate") else ""
    return f"{task['id']} -> {route.role} ({route.reason}){duplicate}"


def _send(action, home, link):
    """As `coord-send TO MSG`, from user@host."""
    from ..coord import inbox

    sender = inbox.person()
    records = inbox.post(home, sender, inbox.targets(home, action["to"], sender),
                         [{"body": action["message"]}])
    return f"sent to {', '.join(r['to'] for r in records)}"


def _control(control):
    def ask(action, home, link):
        """As `mesh-supervise --stop/--restart-child PEER`."""
        from ..agents.supervisor.control import request_current

        record = request_current(home, action["peer"], control)
        return f"sent {control} to {record['key']} spawn {record['spawn']}"
    return ask


def _pick(action, home, link):
    """As `mesh-pick TASK`."""
    from ..landing import pick

    record = pick.pick_task(home, action["task"])
    return f"pick {action['task']}: {record['status']}" + (
        f" ({', '.join(record.get('conflicts') or [])})" if record.get("conflicts") else "")


def _pause(action, home, link):
    """As `queue-pause --for DURATION`."""
    from ..queue.pause import Pauses

    record = Pauses.of(link.broker()).pause(time.time() + action["seconds"], "paused from the dash",
                                            by=BY)
    return f"dispatch paused until {record.get('until_ts')}"


def _resume(action, home, link):
    """As `queue-resume`."""
    from ..queue.pause import Pauses

    ended = Pauses.of(link.broker()).resume(by=BY)
    return "dispatch resumed" if ended else "dispatch was not paused"


def _retry(action, home, link):
    """As `queue-dead retry ID`."""
    from ..queue.broker import DeadLetters

    letters = DeadLetters(link.broker())
    record, = letters.runnable(letters.selected([action["id"]]))
    reply = letters.retry(record)
    if reply is None:
        return f"{record['id']}: gone from the dead letters meanwhile"
    retried, detail = reply
    return (f"{record['id']} -> {letters.broker.names.queue(record['queue'])}" if retried
            else f"{record['id']} not retried: a duplicate letter (the task is {detail})")


_ACTIONS = {"exec": _exec, "send": _send, "kill": _control(STOP),
            "restart": _control(RESTART_CHILD), "pick": _pick, "pause": _pause,
            "resume": _resume, "retry": _retry}
