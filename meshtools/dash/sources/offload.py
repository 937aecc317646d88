"""The offload chain: the LLM endpoints of config.toml's [[dash.offload]] tables, each
asked one GET within its timeout: reachable, latency and, where the endpoint lists them,
the model count (ollama: GET /api/tags; OpenAI-compatible: GET /v1/models; http: GET url).
An endpoint that is down is a record with ok false and the reason, never an exception.
"""

import json
import time

from ...core import config
from .services import REACH_ERRORS, describe, positive

KINDS = {"ollama": "/api/tags", "openai": "/v1/models", "http": ""}


# -- pure logic ----------------------------------------------------------------------------

def endpoints_of(settings: config.Section) -> list[dict]:
    """The [[dash.offload]] tables (settings: config.of(home)) as {name, kind, url,
    timeout}; ConfigError naming file:line:key for a bad one."""
    found = []
    for entry in settings.section("dash").entries("offload"):
        kind, url = entry.value("kind"), entry.required("url")
        if kind not in KINDS:
            raise entry.error("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
        if not url.startswith(("http://", "https://")):
            raise entry.error("url", f"expected an http:// or https:// URL, got {url!r}")
        found.append({"name": entry.required("name"), "kind": kind, "url": url,
                      "timeout": positive(entry)})
    return found


def probe_url(endpoint: dict) -> str:
    path = KINDS[endpoint["kind"]]
    return endpoint["url"].rstrip("/") + path if path else endpoint["url"]


def model_count(kind: str, body: bytes) -> int | None:
    """How many models the reply lists: ollama's {"models": [...]}, OpenAI's {"data":
    [...]}; None for a plain http endpoint or a reply that is not that shape."""
    key = {"ollama": "models", "openai": "data"}.get(kind)
    if key is None:
        return None
    try:
        listed = json.loads(body).get(key)
    except (ValueError, AttributeError):
        return None
    return len(listed) if isinstance(listed, list) else None


# -- asking --------------------------------------------------------------------------------

def probe(endpoint: dict) -> dict:
    """{name, kind, url, ok, latency_ms, models, detail} for one endpoint."""
    import urllib.error
    import urllib.request

    record = {"name": endpoint["name"], "kind": endpoint["kind"], "url": endpoint["url"]}
    start = time.monotonic()
    models = None
    try:
        request = urllib.request.Request(probe_url(endpoint),
                                         headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=endpoint["timeout"]) as response:
            body = response.read(4 << 20)
            models = model_count(endpoint["kind"], body)
            ok, detail = True, f"HTTP {response.status}"
    except urllib.error.HTTPError as e:
        ok, detail = False, f"HTTP {e.code}"
    except REACH_ERRORS as e:
        ok, detail = False, describe(e)
    latency = round((time.monotonic() - start) * 1000, 1)
    return {**record, "ok": ok, "latency_ms": latency, "models": models,
            "detail": detail}
