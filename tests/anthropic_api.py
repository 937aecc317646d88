"""A local stand-in for the Anthropic Messages API, for running the real `claude` CLI offline.

The CLI reaches it through ANTHROPIC_BASE_URL=http://127.0.0.1:PORT. It answers
`POST /v1/messages` with a streamed reply (SSE, event by event as the real API streams:
message_start, ping, content_block_start / delta / stop, message_delta, message_stop) or an
error status, and `HEAD|GET` of anything else with 200 (the CLI's connectivity probe).

Each test scripts its replies: `server.script(reply, reply, ...)` queues them in order (one
per request), and `server.default` answers any request past the queue (a plain end_turn
text by default). A reply is made by `text(...)`, `tool(...)` / `tools(...)`, `error(...)`, or
is a callable taking the request body (a dict) and returning a reply, for the rare test that
must answer by what it was asked (a subagent's requests interleave with its parent's).

    with Server() as api:
        api.script(tool("Write", file_path=p, content="x"), text("done"))
        env = cli_env(api, home)             # the CLI's environment: base URL, login, switches
        ...
        api.requests                         # every request: {path, headers, body}

Stdlib only (http.server), so it runs wherever the tests do.
"""

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "sk-ant-api03-meshtools-test-key"
OAUTH_TOKEN = "sk-ant-oat01-meshtools-test-token"
# what the CLI itself must never do in a test: reach out, update, report
SWITCHES = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1"}
_ids = itertools.count(1)


@dataclass
class Reply:
    """One answer to one request: a streamed message (blocks) or an HTTP error."""
    blocks: list = field(default_factory=list)
    stop_reason: str = "end_turn"
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: dict | None = None
    usage: dict = field(default_factory=lambda: {"input_tokens": 120, "output_tokens": 30})


def text(words: str, **usage) -> Reply:
    return Reply([{"type": "text", "text": words}], "end_turn", **_usage(usage))


def tool(name: str, **tool_input) -> Reply:
    """One tool call (the model stops for its result)."""
    return tools((name, tool_input))


def tools(*calls, preface: str | None = None) -> Reply:
    """Several tool calls in one message: calls are (name, input) pairs."""
    blocks = [{"type": "text", "text": preface}] if preface else []
    blocks += [{"type": "tool_use", "id": f"toolu_{next(_ids):020d}", "name": name,
                "input": tool_input} for name, tool_input in calls]
    return Reply(blocks, "tool_use")


def error(status: int, kind: str, message: str, headers: dict | None = None) -> Reply:
    """An API error as the real API answers one: a JSON body, maybe rate-limit headers."""
    return Reply(status=status, headers=dict(headers or {}),
                 body={"type": "error", "error": {"type": kind, "message": message},
                       "request_id": f"req_{next(_ids):024d}"})


def rate_limited(unified: bool, resets_at: int | None = None, retry_after: int = 0) -> Reply:
    """A 429. With unified, the subscription headers that say the 5-hour window is spent
    (`anthropic-ratelimit-unified-*`); without, a plain per-minute limit."""
    headers = {"retry-after": str(retry_after)}
    if unified:
        reset = resets_at or int(time.time()) + 3600
        headers.update({"anthropic-ratelimit-unified-status": "rejected",
                        "anthropic-ratelimit-unified-reset": str(reset),
                        "anthropic-ratelimit-unified-representative-claim": "five_hour",
                        "anthropic-ratelimit-unified-5h-status": "rejected",
                        "anthropic-ratelimit-unified-5h-reset": str(reset),
                        "anthropic-ratelimit-unified-5h-utilization": "1.0",
                        "anthropic-ratelimit-unified-overage-status": "rejected"})
    return error(429, "rate_limit_error", "This request would exceed your rate limit.",
                 headers)


def overloaded() -> Reply:
    return error(529, "overloaded_error", "Overloaded", {"retry-after": "0"})


def said(body: dict) -> str:
    """All the text the user side of a request carries (the prompt, tool results' text
    aside): how a callable reply tells a subagent's requests from its parent's."""
    out = []
    for message in body.get("messages") or []:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        else:
            out += [b.get("text", "") for b in content or [] if b.get("type") == "text"]
    return "\n".join(out)


def turn(body: dict) -> int:
    """Which model turn a request asks for: 1 + the assistant messages before it."""
    return 1 + sum(m.get("role") == "assistant" for m in body.get("messages") or [])


def _usage(usage: dict) -> dict:
    return {"usage": {"input_tokens": 120, "output_tokens": 30, **usage}} if usage else {}


# --- the stream -------------------------------------------------------------------------

def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def events(reply: Reply, model: str) -> list[bytes]:
    """The SSE events of a streamed message, in the real API's order and shapes: text in
    text_delta pieces, tool input as input_json_delta partial JSON."""
    usage = reply.usage
    out = [sse("message_start", {"type": "message_start", "message": {
        "id": f"msg_{next(_ids):024d}", "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": usage.get("input_tokens", 0),
                  "cache_creation_input_tokens": usage.get("cache_creation_input_tokens", 0),
                  "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0),
                  "output_tokens": 1, "service_tier": "standard"}}}),
           sse("ping", {"type": "ping"})]
    for index, block in enumerate(reply.blocks):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece}
                      for piece in _pieces(block["text"])]
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"],
                     "input": {}}
            raw = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": piece}
                       for piece in _pieces(raw)]
        out.append(sse("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": start}))
        out += [sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                            "delta": delta}) for delta in deltas]
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    out.append(sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": reply.stop_reason,
                                               "stop_sequence": None},
                                     "usage": {"output_tokens": usage.get("output_tokens", 0)}}))
    out.append(sse("message_stop", {"type": "message_stop"}))
    return out


def _pieces(s: str, size: int = 24) -> list[str]:
    return [s[i:i + size] for i in range(0, len(s), size)] or [""]


# --- the server -------------------------------------------------------------------------

class Server:
    """The stand-in, on 127.0.0.1 and a free port, in a thread of the test's process."""

    def __init__(self):
        self.queue: list = []
        self.default = text("Done.")
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, *replies) -> None:
        with self.lock:
            self.queue.extend(replies)

    def messages(self) -> list[dict]:
        """The bodies of the /v1/messages requests, in order."""
        with self.lock:
            return [r["body"] for r in self.requests if r["path"].startswith("/v1/messages")]

    def next_reply(self, body: dict) -> Reply:
        with self.lock:
            reply = self.queue.pop(0) if self.queue else self.default
        return reply(body) if callable(reply) else reply


def _handler(server: Server):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet: the test reads server.requests instead
            pass

        def _record(self, body):
            with server.lock:
                server.requests.append({"method": self.command, "path": self.path,
                                        "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "body": body})

        def do_HEAD(self):
            self._record(None)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self):
            self._record(None)
            self._json(200, {})

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            self._record(body)
            if not self.path.startswith("/v1/messages"):
                self._json(404, {"type": "error", "error": {"type": "not_found_error",
                                                             "message": self.path}})
                return
            if self.path.startswith("/v1/messages/count_tokens"):
                self._json(200, {"input_tokens": 100})
                return
            reply = server.next_reply(body)
            if reply.status != 200:
                self._json(reply.status, reply.body or {}, reply.headers)
                return
            model = body.get("model") or "claude-test"
            if not body.get("stream"):
                self._json(200, _whole(reply, model))
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("request-id", f"req_{next(_ids):024d}")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for chunk in events(reply, model):
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the CLI is gone (a test killed it): nobody to answer

        def _json(self, status, payload, headers=None):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_{next(_ids):024d}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _whole(reply: Reply, model: str) -> dict:
    """A non-streamed answer (the CLI's rare side calls)."""
    return {"id": f"msg_{next(_ids):024d}", "type": "message", "role": "assistant",
            "model": model, "content": reply.blocks, "stop_reason": reply.stop_reason,
            "stop_sequence": None, "usage": reply.usage}


def cli_env(server: Server, home, login: str = "api_key", base=None) -> dict:
    """The real CLI's environment for a test: the stand-in's URL, its own config and home
    under `home`, one login (api_key: ANTHROPIC_API_KEY; subscription: an OAuth token), the
    traffic, telemetry and updater switches off, and no credentials of the machine's."""
    import os

    env = {k: v for k, v in (base or os.environ).items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE_")) and k != "CLAUDECODE"}
    home = os.fspath(home)
    os.makedirs(os.path.join(home, "config"), exist_ok=True)
    env.update(SWITCHES)
    env.update({"ANTHROPIC_BASE_URL": server.url, "HOME": home,
                "CLAUDE_CONFIG_DIR": os.path.join(home, "config"), "IS_SANDBOX": "1",
                "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        env.pop(proxy, None)
    if login == "subscription":
        env["CLAUDE_CODE_OAUTH_TOKEN"] = OAUTH_TOKEN
    else:
        env["ANTHROPIC_API_KEY"] = API_KEY
    return env
