"""What acquire, release and reclaim do to the lock table: data in, data out, no I/O.

A holding names its holder (a session id, the node of the wait-for graph) and its owner,
the process whose life keeps it (pid + start time + host); a wait names the waiting process
and the scopes it wants. Every grant takes a fresh, strictly increasing generation: the fencing
token that lets the gate refuse a holder that was presumed dead and came back.
"""

from typing import Callable, NamedTuple

from . import graph


class Claimant(NamedTuple):
    id: str  # session id: who holds, and the node in the wait-for graph
    pid: int  # the process whose life keeps the holding alive
    pid_start: int | None
    host: str

    def owner(self) -> dict:
        """The owning process as a holding or a wait records it."""
        return {"pid": self.pid, "pid_start": self.pid_start, "host": self.host}


def blockers(table: dict, claimant_id: str, scopes: list[str]) -> dict[str, dict]:
    """scope -> the holding of someone else that stands in the way."""
    locks = table["locks"]
    return {s: locks[s] for s in scopes if s in locks and locks[s]["holder"] != claimant_id}


def lease_expired(holding: dict, now: float) -> bool:
    return holding.get("lease_until") is not None and holding["lease_until"] <= now


def owner_key(owner: dict) -> tuple:
    """What names one process: pid, start time, host (comparable with Claimant.owner())."""
    return owner.get("pid"), owner.get("pid_start"), owner.get("host")


def unproven(holding: dict | None, claimant_id: str, owners: set[tuple], now: float,
             alive: Callable[[dict], bool | None]) -> str | None:
    """Why holding does not prove that the caller holds its scope, or None when it does.
    Proof is: held under the caller's id, lease not run out, owned by one of the
    caller's own processes (owners: owner_key()s), and that process provably alive. The
    id alone is not enough: a new process that took over a dead session's id holds nothing."""
    if holding is None:
        return "nobody holds it"
    if holding["holder"] != claimant_id:
        return f"held by {holding['holder']} since {holding['since']}"
    if lease_expired(holding, now):
        return "your lease on it ran out"
    if alive(holding) is not True:
        return f"the process that held it for you (pid {holding['pid']}) is gone"
    if holding.get("pid_start") is None or owner_key(holding) not in owners:
        return (f"it is held under your id by process {holding['pid']}, which is not yours "
                "(not your session's process nor one of your ancestors)")
    return None


def reap(table: dict, now: float, is_dead: Callable[[dict], bool]) -> list[dict]:
    """Drop holdings whose owner died or whose lease ran out, and waits of dead waiters.
    Returns the reclaimed holdings (each with its 'reason')."""
    reclaimed = []
    for scope, holding in list(table["locks"].items()):
        reason = ("lease expired" if lease_expired(holding, now)
                  else "holder dead" if is_dead(holding) else None)
        if reason:
            del table["locks"][scope]
            reclaimed.append(dict(holding, reason=reason))
    for key, wait in list(table["waits"].items()):
        if is_dead(wait):
            del table["waits"][key]
    return reclaimed


def grant(table: dict, claimant: Claimant, scopes: list[str], now: float,
          lease: float | None, since: str) -> list[dict]:
    """Give every scope to the claimant (the caller checked there are no blockers).
    A scope it already holds keeps its generation; its lease is renewed."""
    granted = []
    for scope in scopes:
        holding = table["locks"].get(scope)
        if holding is None:
            table["generation"] += 1
            holding = {"scope": scope, "holder": claimant.id, "since": since,
                       "since_ts": now, "generation": table["generation"], **claimant.owner()}
        holding["lease_until"] = now + lease if lease else None
        table["locks"][scope] = holding
        granted.append(holding)
    return granted


def wait_key(waiting: dict) -> str:
    return f"{waiting['host']}:{waiting['pid']}"


def set_wait(table: dict, waiter: str, waiting: dict, scopes: list[str], since: str) -> bool:
    """Record that waiter waits for scopes. The wait is owned by the waiting process
    (not the holder's owner), so a waiter killed mid-wait leaves no edge behind.
    True when the wait is new (worth an event)."""
    key = wait_key(waiting)
    new = key not in table["waits"]
    if new:
        table["waits"][key] = {"waiter": waiter, "scopes": scopes, "since": since, **waiting}
    return new


def clear_wait(table: dict, waiting: dict) -> None:
    table["waits"].pop(wait_key(waiting), None)


def wait_for_edges(table: dict) -> list[graph.Edge]:
    holders = {scope: h["holder"] for scope, h in table["locks"].items()}
    waits: dict[str, list[str]] = {}
    for wait in table["waits"].values():
        waits.setdefault(wait["waiter"], []).extend(wait["scopes"])
    return graph.edges(holders, waits)


def release(table: dict, claimant_id: str, scopes: list[str] | None,
            force: bool = False) -> tuple[list[dict], list[dict]]:
    """Release scopes (None: all the claimant holds). Returns (released, refused): a scope
    held by another session is refused unless forced; an unheld one is simply not there."""
    if scopes is None:
        scopes = [s for s, h in table["locks"].items() if h["holder"] == claimant_id]
    released, refused = [], []
    for scope in scopes:
        holding = table["locks"].get(scope)
        if holding is None:
            continue
        if holding["holder"] != claimant_id and not force:
            refused.append(holding)
            continue
        released.append(table["locks"].pop(scope))
    return released, refused
