"""The restart policy, pure: what follows a child's exit, and how long to wait first.

A *rapid failure* is an exit within `min_uptime` of the start, whatever the exit code
(see PRIOR-ART "Supervisors and the rapid-fail cap"). n counts consecutive rapid failures;
before each restart the supervisor sleeps min(base*n*n, cap); at `max_rapid_failures` it
goes FATAL; a run that lasted `min_uptime` resets n to 0. There is no time window: with a
growing delay a window may never fill (systemd's trap).
"""

from typing import NamedTuple

ALWAYS, ON_FAILURE = "always", "on-failure"
RESTART, FATAL, DONE = "restart", "fatal", "done"


def backoff_delay(n: int, base: float, cap: float) -> float:
    """Seconds to wait before the restart that follows the n-th consecutive rapid failure."""
    return min(base * n * n, cap)


class RestartPolicy(NamedTuple):
    base: float = 1.0
    cap: float = 60.0
    min_uptime: float = 10.0  # a run shorter than this is a rapid failure
    max_rapid_failures: int = 5  # the n-th consecutive rapid failure is FATAL
    restart: str = ALWAYS  # or ON_FAILURE: an exit 0 ends supervision
    # Under ALWAYS, set for a persistent agent (a single-shot prompt re-run on each exit):
    # an exit 0 is a finished run, not a failure: run again after this many seconds.
    rerun_delay: float | None = None

    def check(self) -> "RestartPolicy":
        """This policy, if it makes sense; else ValueError."""
        if self.restart not in (ALWAYS, ON_FAILURE):
            raise ValueError(f"restart must be {ALWAYS!r} or {ON_FAILURE!r}")
        if self.max_rapid_failures < 1 or min(self.base, self.cap, self.min_uptime,
                                              self.rerun_delay or 0) < 0:
            raise ValueError("negative times or max_rapid_failures < 1")
        return self


class Decision(NamedTuple):
    action: str  # RESTART, FATAL or DONE
    n: int  # consecutive rapid failures after this exit
    delay: float = 0.0  # seconds to sleep before the restart


def decide_restart(policy: RestartPolicy, n: int, uptime: float, exit_code: int) -> Decision:
    """What to do after a child that ran `uptime` seconds exited with `exit_code`, when it
    was the latest of n consecutive rapid failures before it."""
    if exit_code == 0 and policy.restart == ON_FAILURE:
        return Decision(DONE, 0)
    if exit_code == 0 and policy.rerun_delay is not None:
        return Decision(RESTART, 0, policy.rerun_delay)
    n = n + 1 if uptime < policy.min_uptime else 0
    if n >= policy.max_rapid_failures:
        return Decision(FATAL, n)
    return Decision(RESTART, n, backoff_delay(n, policy.base, policy.cap))


def exit_status(returncode: int) -> int:
    """A Popen returncode as a shell reports it: 128+N for death by signal N."""
    return returncode if returncode >= 0 else 128 - returncode
