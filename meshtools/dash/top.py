"""mesh-top's side of the snapshot, pure: the dash's snapshot as JSON line records (one per
peer, queue, service, endpoint, GPU, problem, ..., each with ts and kind) grouped by panel,
and the columns each panel's table shows on a terminal."""

from . import peers

# panel: the record kinds it holds (health.records' kinds, and the dash's)
PANELS = {"redis": ("redis",), "peers": ("session",),
          "queues": ("queue", "dead", "pause", "budget"), "services": ("service",),
          "offload": ("offload",), "gpus": ("gpu",), "problems": ("problem",),
          "events": ("event",)}
DEFAULT = tuple(p for p in PANELS if p != "events")  # events only when asked for
COLUMNS = {"redis": ("url", "up", "version", "rtt_ms", "used_memory", "error"),
           "peers": tuple(c.name for c in peers.COLUMNS),
           "queues": ("kind", "queue", "length", "pending", "oldest_age", "count", "reason",
                      "until_ts", "spent_today_usd", "daily_usd"),
           "services": ("name", "kind", "ok", "latency_ms", "detail"),
           "offload": ("name", "kind", "ok", "latency_ms", "models", "detail"),
           "gpus": ("index", "name", "util", "mem_used", "mem_total", "absent"),
           "problems": ("problem", "subject", "text"),
           "events": ("ts", "event", "peer", "task", "id")}


def records(snapshot: dict, panels=DEFAULT) -> list[dict]:
    """The records of these panels, in panel order. A source that failed or gave nothing
    yet is still a record where health has one (redis down); the GPU panel without a GPU
    is one record saying why."""
    from ..mesh import health

    ts = snapshot["ts"]
    error = ((snapshot.get("sources") or {}).get("health") or {}).get("error")
    base = health.records({**snapshot, "peers": peers.rows(snapshot),
                           "redis": snapshot.get("redis") or {"up": None, "error": error},
                           "problems": snapshot.get("problems") or []})
    absent = ((snapshot.get("sources") or {}).get("gpus") or {}).get("absent")
    dash = ([{"ts": ts, "kind": "service", **s} for s in snapshot.get("services") or []]
            + [{"ts": ts, "kind": "offload", **s} for s in snapshot.get("offload") or []]
            + ([{"ts": ts, "kind": "gpu", **g} for g in snapshot.get("gpus") or []]
               or [{"ts": ts, "kind": "gpu", "absent": absent or "no GPU"}])
            + [{**e, "kind": "event"} for e in snapshot.get("events") or []])
    found = base + dash
    return [r for panel in panels for r in found if r.get("kind") in PANELS[panel]]


def table_rows(panel: str, found: list[dict]) -> list[dict]:
    """The records of a panel as its table shows them (the peer table's cells as the dash
    writes them)."""
    if panel == "peers":
        return [{c.name: c.text(r) for c in peers.COLUMNS} for r in found]
    return found
