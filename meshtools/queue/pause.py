"""When the whole mesh stops dispatching, and until when: the one owner of pauses and of the
daily budget (as rq's suspension.py is of suspending workers).

A subscription's usage window, a spend limit or a failed login hits every agent of the
mesh alike, so one worker's bad outcome pauses them all (`mesh:paused`, a JSON record with
an expiry), instead of each burning its retries and the quota. A plain rate limit does not:
its task backs off alone (queue.limits). The daily budget works the same way: past the cap, no
new task starts until the next UTC midnight.

The functions are pure (data in, data out); `Pauses` keeps the state in Redis, and
`after_run` is the step after every agent run, queue-drain's and mesh-agent's alike.
"""

import functools
import json
import time
from datetime import datetime, timedelta, timezone

from ..core import clock
from . import outcome
from .broker import _EVENT  # the scripts write their events as the queue's scripts do
from .limits import SPEND_LIMIT, pauses_mesh

AUTH, BUDGET = "auth", "budget"
AUTH_PAUSE = 600.0  # a failed login: every task would fail the same way for a while
UNKNOWN_RESET = 300.0  # a usage window without resetsAt: look again in 5 minutes
SPEND_PAUSE = 3600.0  # a spend limit that does not say when it lifts: look again in an hour
MIN_PAUSE = 1.0
SPEND_TTL = 2 * 86400  # mesh:spend:<day> lives two days


def day(now: float | None = None) -> str:
    """The UTC day a spend counter belongs to (YYYY-MM-DD)."""
    return datetime.fromtimestamp(time.time() if now is None else now,
                                  timezone.utc).strftime("%Y-%m-%d")


def next_utc_midnight(now: float) -> float:
    today = datetime.fromtimestamp(now, timezone.utc).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)
    return (today + timedelta(days=1)).timestamp()


def for_outcome(details: dict, now: float) -> tuple[float, str] | None:
    """(until, reason) when an agent's outcome should pause the mesh, else None."""
    kind = (details or {}).get("error")
    if pauses_mesh(kind):  # the reason is the limit: usage_limit or spend_limit
        resets = details.get("resets_at")
        unknown = SPEND_PAUSE if kind == SPEND_LIMIT else UNKNOWN_RESET
        until = float(resets) if isinstance(resets, (int, float)) and resets > now \
            else now + unknown
        return max(until, now + MIN_PAUSE), kind
    if kind == outcome.AUTH:  # a failed login (the error kind; AUTH here is the reason)
        return now + AUTH_PAUSE, AUTH
    return None


def for_budget(spent: float | None, cap: float | None, now: float) -> tuple[float, str] | None:
    """(next UTC midnight, 'budget') once today's spend has reached the cap."""
    if cap is None or spent is None or spent < cap:
        return None
    return next_utc_midnight(now), BUDGET


def record(until: float, reason: str, by: str | None, now: float, **extra) -> dict:
    """The value of mesh:paused."""
    return {"reason": reason, "until": round(until, 3), "until_ts": clock.iso(until),
            "by": by, "since": clock.iso(now), **extra}


def daily_cap(settings) -> float | None:
    """config.toml `[budget] daily_usd` (settings: config.of(home)), or None (no cap)."""
    budget = settings.section("budget")
    value = budget.value("daily_usd")
    if value is not None and value <= 0:
        raise budget.error("daily_usd", f"must be a number > 0, not {value!r}")
    return value


def after_run(pauses: "Pauses | None", details: dict, cap: float | None, by: str,
              guard=None, **extra) -> list[dict]:
    """The step after an agent run, the worker's and mesh-agent's alike: count the run's
    cost into today's spend and pause the mesh for a usage window, a spend limit, a failed
    login or a spent budget. pauses is None without Redis; guard(operation) runs the Redis
    part (the worker waits out an unavailable Redis, mesh-agent goes without). Returns the
    pauses in force afterwards (one per cause)."""
    if pauses is None:
        return []
    account = functools.partial(pauses.account, details, cap, by, **extra)
    return (guard(account) if guard else account()) or []


# KEYS: events, paused   ARGV: ts, record json, until (ms), reason, by
# A pause only ever extends: a shorter one never cuts a longer one short.
PAUSE = _EVENT + """
local current = redis.call('GET', KEYS[2])
if current then
  local ok, old = pcall(cjson.decode, current)
  if ok and tonumber(old['until']) and tonumber(old['until']) * 1000 >= tonumber(ARGV[3]) then
    return current
  end
end
redis.call('SET', KEYS[2], ARGV[2], 'PXAT', ARGV[3])
event({event='mesh.paused', reason=ARGV[4], ['until']=cjson.decode(ARGV[2])['until_ts'], by=ARGV[5]})
return ARGV[2]
"""

# KEYS: events, paused, resumed   ARGV: ts, since of the pause that ended, by, forced
RESUMED = _EVENT + """
if ARGV[4] == '1' then redis.call('DEL', KEYS[2]) end
if redis.call('GET', KEYS[3]) == ARGV[2] then return 0 end
redis.call('SET', KEYS[3], ARGV[2], 'EX', 86400)
event({event='mesh.resumed', paused_since=ARGV[2], by=ARGV[3]})
return 1
"""


class Pauses:
    """mesh:paused, mesh:resumed and the daily spend counters, on one Redis connection."""

    def __init__(self, client, names):
        self.redis = client
        self.names = names
        self._pause = client.register_script(PAUSE)
        self._resumed = client.register_script(RESUMED)

    @classmethod
    def of(cls, broker) -> "Pauses":
        """The pauses of a broker's mesh, on the broker's connection."""
        return cls(broker.redis, broker.names)

    def pause(self, until: float, reason: str, by: str | None = None, **extra) -> dict:
        """Stop dispatch mesh-wide until `until` (epoch seconds); the key expires then.
        Returns the pause in force (an existing longer one wins)."""
        now = time.time()
        value = record(until, reason, by, now, **extra)
        kept = self._pause(keys=[self.names.events, self.names.paused],
                           args=[clock.iso(now), json.dumps(value), int(until * 1000), reason,
                                 by or ""])
        return json.loads(kept)

    def paused(self) -> dict | None:
        """The pause in force, or None."""
        value = self.redis.get(self.names.paused)
        if value is None:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return {"reason": "unknown", "until": None}

    def resumed(self, pause: dict, by: str | None = None, force: bool = False) -> bool:
        """Announce the end of `pause` once (mesh.resumed); force=True ends it now."""
        return bool(self._resumed(keys=[self.names.events, self.names.paused, self.names.resumed],
                                  args=[clock.iso(), pause.get("since") or "", by or "",
                                        "1" if force else "0"]))

    def resume(self, by: str | None = None) -> dict | None:
        """End the pause in force now; returns it (None when there was none)."""
        current = self.paused()
        if current is not None:
            self.resumed(current, by, force=True)
        return current

    def in_force(self, daily_cap: float | None, by: str) -> dict | None:
        """The pause a new task must wait out, or None; a day whose budget is spent starts
        one (until the next UTC midnight)."""
        current = self.paused()
        if current is None and daily_cap is not None:
            now = clock.calendar_now()
            over = for_budget(self.spent(day(now)), daily_cap, now)
            if over:
                current = self.pause(*over, by=by)
        return current

    def account(self, details: dict, daily_cap: float | None, by: str, **extra) -> list[dict]:
        """After an agent run: count its cost into today's spend, and pause the mesh when the
        run hit a usage window, a spend limit or a failed login, or the day's budget is now
        spent. Returns
        the pauses in force afterwards (one per cause)."""
        now, today = time.time(), clock.calendar_now()
        cost = (details or {}).get("cost_usd")
        spent = None
        if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost > 0:
            spent = self.add_spend(cost, day(today), (details or {}).get("role"))
        causes = (for_outcome(details, now), for_budget(spent, daily_cap, today))
        return [self.pause(*cause, by=by, **extra) for cause in causes if cause]

    def add_spend(self, usd: float, day: str, role: str | None = None) -> float:
        """Add to the day's spend counter (and its role's); returns the day's total."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.incrbyfloat(self.names.spend(day), usd)
        pipe.expire(self.names.spend(day), SPEND_TTL)
        if role:
            pipe.hincrbyfloat(self.names.spend_by_role(day), role, usd)
            pipe.expire(self.names.spend_by_role(day), SPEND_TTL)
        return float(pipe.execute()[0])

    def spent(self, day: str) -> float:
        return float(self.redis.get(self.names.spend(day)) or 0.0)

    def spent_by_role(self, day: str) -> dict[str, float]:
        return {role: float(usd)
                for role, usd in self.redis.hgetall(self.names.spend_by_role(day)).items()}
