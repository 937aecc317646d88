"""One secret filter for every writer (core.redact): each token shape, the key rule that
keeps token counts, the environment's secrets, and a worker's whole trail (events, the
events stream, tasks:results, the append-only file, its own stdout) free of them."""

import json
import os
import signal

import psutil
import pytest

from meshtools.core.redact import MASK, redact, secret_key

from .helpers import redis_of, wait_until


def fresh(prefix: str, n: int = 24, alphabet: str = "0123456789abcdef") -> str:
    """A secret nobody else's test or log contains."""
    return prefix + "".join(alphabet[b % len(alphabet)] for b in os.urandom(n))


UPPER = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")

# (shape, text carrying the secret, the secret itself)
SHAPES = [
    ("anthropic key", "key sk-ant-api03-{s} here", "sk-ant-api03-{s}"),
    ("openai key", "key sk-proj-{s} here", "sk-proj-{s}"),
    ("github ghp", "ghp_{s}", "ghp_{s}"),
    ("github gho", "token=gho_{s}", "gho_{s}"),
    ("github ghu", "(ghu_{s})", "ghu_{s}"),
    ("github ghs", "x ghs_{s}", "ghs_{s}"),
    ("github ghr", "x ghr_{s}", "ghr_{s}"),
    ("github fine-grained", "github_pat_11A{s}_{s}", "github_pat_11A{s}_{s}"),
    ("aws access key id", "id AKIA{u} ok", "AKIA{u}"),
    ("aws secret", "aws_secret_access_key = {s}/Zx+9", "{s}/Zx+9"),
    ("aws secret env", "export AWS_SECRET_ACCESS_KEY={s}", "{s}"),
    ("anthropic auth token", "ANTHROPIC_AUTH_TOKEN={s} claude", "{s}"),
    ("bearer jwt", "Authorization: Bearer " + JWT, JWT),
    ("bearer opaque", "curl -H 'Authorization: Bearer {s}'", "{s}"),
    ("bare jwt", "cookie was " + JWT + ".", JWT),
    ("slack bot", "xoxb-1234-5678-{s}", "xoxb-1234-5678-{s}"),
    ("slack user", "xoxp-{s}", "xoxp-{s}"),
    ("json password", '{{"password": "{s}"}}', "{s}"),
    ("yaml api key", "api_key: {s}", "{s}"),
    ("camel case", "clientSecret={s}", "{s}"),
]


@pytest.mark.parametrize("shape,text,secret", SHAPES, ids=[s[0] for s in SHAPES])
def test_each_token_shape_is_redacted(shape, text, secret):
    s, u = fresh(""), fresh("", 16, UPPER)
    text, secret = text.format(s=s, u=u), secret.format(s=s, u=u)
    out = redact({"output": text, "lines": [text]})
    assert secret not in json.dumps(out) and MASK in out["output"], out
    assert out["lines"] == [out["output"]]


@pytest.mark.parametrize("key", ["api_key", "apikey", "API-KEY", "token", "access_token",
                                 "auth_token", "refresh_token", "secret", "client_secret",
                                 "password", "db_password", "authorization", "Cookie",
                                 "GITHUB_TOKEN", "ANTHROPIC_API_KEY", "accessToken",
                                 "x-api-key"])
def test_secret_named_keys_are_masked(key):
    assert secret_key(key)
    assert redact({key: "hunter2", "id": "t1"}) == {key: MASK, "id": "t1"}


@pytest.mark.parametrize("key", ["tokens", "input_tokens", "output_tokens", "max_tokens",
                                 "cache_read_input_tokens", "cache_creation_input_tokens",
                                 "inputTokens", "key", "keys", "monkey", "tokenizer",
                                 "secretary", "passwords_checked"])
def test_counts_and_lookalikes_are_kept(key):
    assert not secret_key(key)
    value = {"input": 3, "output": 5} if key == "tokens" else 1234
    assert redact({key: value}) == {key: value}


def test_text_that_only_looks_alike_is_kept():
    text = ("max_tokens=100000 input_tokens: 12345678 monkey=bananas12 bearer tokens are "
            "fine; sk-short, ghp_short, the key: value")
    assert redact(text) == text


def test_the_environments_secrets_are_redacted_wherever_they_appear(monkeypatch):
    api, token, short = fresh("plain"), fresh("opaque"), "abc123"
    monkeypatch.setenv("ANTHROPIC_API_KEY", api)
    monkeypatch.setenv("MY_SERVICE_TOKEN", token)
    monkeypatch.setenv("SHORT_SECRET", short)  # under 8 characters: too common to mask
    monkeypatch.setenv("NOT_SECRET_NAME", fresh("visible"))
    monkeypatch.setenv("MESH_SPAWN_KEY", "builder-1")  # the mesh's own names are no secrets
    text = f"a{api}b {token}! {short} {os.environ['NOT_SECRET_NAME']} builder-1"
    assert redact(text) == f"a{MASK}b {MASK}! {short} {os.environ['NOT_SECRET_NAME']} builder-1"


# --- a worker's whole trail ------------------------------------------------------------

def everything_stored(mesh_home) -> str:
    """Every file under MESH_HOME (events.jsonl, Redis's append-only file, logs) and every
    entry of the events and results streams, as one text."""
    r = redis_of(mesh_home)
    streams = {name: r.xrange(name) for name in ("mesh:events", "tasks:results", "tasks:dead")}
    texts = [json.dumps(streams)]
    for folder, _, files in os.walk(mesh_home):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not name.endswith((".sock", ".pid")):
                with open(path, "rb") as f:
                    texts.append(f.read().decode("utf-8", "replace"))
    return "\n".join(texts)


def test_no_secret_reaches_events_redis_the_aof_or_stdout(run, mesh_home, tmp_path):
    api_key = fresh("sk-ant-api03-")  # the worker's own key, printed by the task
    made = fresh("", 16, UPPER)  # assembled at run time: the prompt never shows it whole
    github = fresh("", 20)
    prompt = (f"echo \"key $ANTHROPIC_API_KEY\"; printf 'AKIA%s\\n' {made};"
              f" printf 'ghp_%s\\n' {github};"
              f" printf 'Authorization: Bearer %s%s\\n' {JWT[:30]} {JWT[30:]}; exit 3")
    task = {"id": "leaky", "prompt": prompt, "max_attempts": 1, "tokens": 1234,
            "input_tokens": 56, "max_tokens": 4096, "cache_read_input_tokens": 7}
    pushed = run("queue-push", "-", input=json.dumps(task) + "\n", check=0)
    drained = run("queue-drain", "--burst", "--workdir", str(tmp_path), check=0,
                  env={"ANTHROPIC_API_KEY": api_key})
    redis_of(mesh_home).execute_command("BGREWRITEAOF")  # nothing hides in a rewrite either
    wait_until(lambda: "leaky" in everything_stored(mesh_home) and "dead_lettered"
               in everything_stored(mesh_home))
    trail = "\n".join([pushed.stdout, pushed.stderr, drained.stdout, drained.stderr,
                       everything_stored(mesh_home)])
    for secret in (api_key, "ghp_" + github, "AKIA" + made, JWT):
        assert secret not in trail, secret
    [result] = drained.records
    assert result["output"].count(MASK) == 4 and result["status"] == "failed"
    [stored] = [json.loads(f["result"]) for _, f in redis_of(mesh_home).xrange("tasks:results")]
    assert (stored["tokens"], stored["input_tokens"], stored["max_tokens"],
            stored["cache_read_input_tokens"]) == (1234, 56, 4096, 7)


def test_a_task_carrying_a_secret_is_refused_not_run_altered(run, mesh_home, tmp_path):
    """Masking a secret in a prompt would run another task than the one given."""
    secret = fresh("ghp_")
    refused = run("queue-push", "--id", "leak", f"curl -H 'token: x' -u me:{secret} x")
    assert refused.returncode == 65 and "'prompt' carries what looks like a secret" in \
        refused.stderr and secret not in refused.stderr
    batch = [{"id": "fine", "prompt": "true"}, {"id": "meta", "prompt": "true",
                                                "api_key": "0123456789abcdef"}]
    refused = run("queue-push", "-", input="".join(json.dumps(t) + "\n" for t in batch))
    assert refused.returncode == 65 and "'api_key'" in refused.stderr
    # one written into the queue by hand is dead-lettered by the worker, never run
    redis_of(mesh_home).xadd("tasks:queue:default", {"task": json.dumps(
        {"id": "raw", "prompt": f"touch ran; echo {secret}"})})
    run("queue-drain", "--burst", "--workdir", str(tmp_path), check=0)
    assert not (tmp_path / "ran").exists()
    r = redis_of(mesh_home)  # (the hand-made XADD itself is in the append-only file)
    kept = [r.xrange(name) for name in ("mesh:events", "tasks:results", "tasks:dead")]
    assert secret not in json.dumps(kept)
    [dead] = run("queue-dead", "list", check=0).records
    assert dead["id"] == "raw"


def test_an_agents_token_counts_reach_the_results(run, claude_cli, tmp_path, mesh_home):
    run("queue-push", "--role", "builder", "@cost 0.5\nok", check=0)
    [printed] = run("queue-drain", "--agent", "claude", "--queue", "builder", "--burst",
                    "--workdir", str(tmp_path), check=0).records
    [stored] = run("queue-results", check=0).records
    for record in (printed, stored):
        assert isinstance(record["tokens"], dict) and record["tokens"]["output"] > 0


def test_a_spawned_workers_log_carries_no_secret(run, repo, mesh_home):
    """A detached worker's log is its stdout and stderr: the records in it are redacted."""
    secret = fresh("sk-ant-api03-")
    spawned = run("mesh-spawn", "builder", "--queue", "--agent", "shell", "--detach", "--json",
                  env={"ANTHROPIC_API_KEY": secret}, check=0, timeout=60).records[-1]
    try:
        run("queue-push", "--role", "builder", "--id", "logged", 'echo "$ANTHROPIC_API_KEY"',
            check=0)
        run("queue-results", "--wait", "logged", "--timeout", "30", check=0)
        wait_until(lambda: "logged" in open(spawned["log"]).read())
        log = open(spawned["log"]).read()
        assert MASK in log and secret not in log and secret not in everything_stored(mesh_home)
    finally:
        os.kill(spawned["pid"], signal.SIGTERM)
        psutil.wait_procs([psutil.Process(spawned["pid"])], timeout=30)


def test_an_absent_secret_stays_visible():
    assert redact({"api_key": None, "token": "", "password": "x"}) == {
        "api_key": None, "token": "", "password": MASK}


def test_a_message_carrying_a_secret_is_redacted_in_the_inbox(run, anchor_process, mesh_home):
    """coord-send wrote its body verbatim into the recipient's inbox file (and its own
    stdout): a peer reads that file into its prompt and transcript."""
    run("coord-register", "--role", "builder", "--id", "b1", "--pid",
        str(anchor_process().pid), check=0)
    token, key = fresh("tok"), fresh("sk-ant-api03-")
    sent = run("coord-send", "--as", "m1", "b1", f"use ANTHROPIC_AUTH_TOKEN={token} now",
               check=0)
    run("coord-send", "--as", "m1", "b1", "-", check=0,
        input=json.dumps({"to": "b1", "data": {"api_key": key, "note": f"and {key}"}}) + "\n")
    stored = "".join(p.read_text() for p in (mesh_home / "inbox").rglob("*") if p.is_file())
    received = run("coord-recv", "--as", "b1", check=0)
    for text in (sent.stdout, stored, received.stdout):
        assert token not in text and key not in text
    assert MASK in received.stdout and "now" in received.stdout


def test_a_secret_cut_short_in_a_prompts_preview_is_still_redacted(run, repo, claude_cli,
                                                                   mesh_home):
    """agent.started carries the prompt's first 80 characters: cut there, `ghp_0123…` had
    lost the shape the filter knows and reached events.jsonl."""
    secret = fresh("ghp_", 30)
    prompt = "x" * 60 + " " + secret
    run("mesh-agent", "research", prompt, cwd=str(repo), check=0)
    [started] = [json.loads(line) for line in (mesh_home / "events.jsonl").read_text()
                 .splitlines() if json.loads(line)["event"] == "agent.started"]
    assert MASK in started["prompt"] and secret[:10] not in started["prompt"]
