"""Service health: the checks of config.toml's [[dash.service]] tables, each within its
timeout (the mesh's own Redis is meshctl status's reader, mesh.health).

A check never raises: a service that is down, slow or misconfigured on its side is a
record with ok false and the reason in `detail`. Only a malformed table is an error, a
ConfigError (78) naming file:line and key, raised when the checks are read.
"""

import http.client
import os
import signal
import subprocess
import time

from ...core import config, proc
from ...core.redact import redact_text
from ...landing.gitops import first_line

KINDS = ("tcp", "http", "unix", "pidfile", "command")


# -- pure logic ----------------------------------------------------------------------------

def host_port(target: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError when it is neither."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {target!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def describe(error: BaseException) -> str:
    """One line for a failed check: the OS's words where there are some (urllib wraps
    them in a URLError's reason)."""
    reason = getattr(error, "reason", None)
    if isinstance(reason, BaseException):
        return describe(reason)
    if isinstance(error, TimeoutError):
        return "timed out"
    text = getattr(error, "strerror", None) or reason or str(error)
    return first_line(str(text))[:200] or type(error).__name__


def services_of(settings: config.Section) -> list[dict]:
    """The [[dash.service]] tables of config.toml (settings: config.of(home)) as
    {name, kind, target, timeout}; ConfigError naming file:line:key for a bad one."""
    found = []
    for entry in settings.section("dash").entries("service"):
        kind = entry.required("kind")
        if kind not in KINDS:
            raise entry.error("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
        found.append({"name": entry.required("name"), "kind": kind,
                      "target": entry.required("target"), "timeout": positive(entry)})
        if kind == "tcp":
            try:
                host_port(found[-1]["target"])
            except ValueError as e:
                raise entry.error("target", str(e))
    return found


def positive(entry: config.Section) -> float:
    """An entry's timeout: seconds, more than 0."""
    timeout = entry.value("timeout")
    if timeout <= 0:
        raise entry.error("timeout", f"expected seconds, more than 0, got {timeout!r}")
    return timeout


# -- the checks: (ok, detail), raising OSError or ValueError for a failure to reach --------

def check_tcp(target: str, timeout: float) -> tuple[bool, str]:
    import socket

    with socket.create_connection(host_port(target), timeout=timeout):
        return True, "connected"


def check_unix(target: str, timeout: float) -> tuple[bool, str]:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(target)
        return True, "connected"


def check_http(target: str, timeout: float) -> tuple[bool, str]:
    """GET target: up below status 400 (redirects followed)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            return response.status < 400, f"HTTP {response.status}"
    except urllib.error.HTTPError as e:
        return False, f"HTTP {e.code}"


def check_pidfile(target: str, timeout: float) -> tuple[bool, str]:
    try:
        with open(target, encoding="utf-8") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return False, f"no pid file {target}"
    if not text.isdigit():
        return False, f"{target} holds no pid"
    pid = int(text)
    return (True, f"pid {pid}") if proc.is_alive(pid) else (False, f"pid {pid} is not running")


def check_command(target: str, timeout: float) -> tuple[bool, str]:
    """`sh -c target`: up when it exits 0. Killed, with all it started, at the timeout."""
    child = subprocess.Popen(["sh", "-c", target], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        output, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # its own session: pgid = its pid
        child.communicate()
        return False, "timed out"
    said = redact_text(first_line(output)[:200])  # it may print a token
    if child.returncode == 0:
        return True, said or "exit 0"
    return False, f"exit {child.returncode}" + (f": {said}" if said else "")


# what failing to reach a service raises (socket timeouts and refusals are OSErrors; a
# malformed URL a ValueError; a garbled HTTP reply an HTTPException)
REACH_ERRORS = (OSError, ValueError, http.client.HTTPException)
CHECKS = {"tcp": check_tcp, "http": check_http, "unix": check_unix,
          "pidfile": check_pidfile, "command": check_command}


def check(service: dict) -> dict:
    """Run one configured check: {name, kind, ok, latency_ms, detail}."""
    start = time.monotonic()
    try:
        ok, detail = CHECKS[service["kind"]](service["target"], service["timeout"])
    except REACH_ERRORS as e:
        ok, detail = False, describe(e)
    latency = round((time.monotonic() - start) * 1000, 1)
    return {"name": service["name"], "kind": service["kind"], "ok": ok,
            "latency_ms": latency, "detail": detail}
