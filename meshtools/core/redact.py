"""The one secret filter: whatever the mesh writes (events, results, queued tasks, records on
stdout) passes through redact() first, so that no API key or token reaches events.jsonl,
Redis (and its append-only file) or a spawn's log.

Three rules, cheap enough for every write (precompiled; ~20 ms for a 1 MB output):
- a secret-named key masks its whole value: exact names (token, password, api_key, ...) or
  names ending in _token/_secret/_key/_password; never counts such as tokens, input_tokens;
- secret-shaped values anywhere in a string: sk-..., gh?_..., github_pat_..., AWS access key
  ids, Bearer tokens, JWTs, Slack xox?- tokens, and NAME=value / "NAME": "value" where NAME
  is secret-named (aws_secret_access_key=..., ANTHROPIC_AUTH_TOKEN=...);
- the current value of every secret-named environment variable (8 characters or more;
  not the mesh's own MESH_*), wherever it appears.
"""

import functools
import os
import re

MASK = "[redacted]"
MIN_ENV_VALUE = 8

# A secret-named key: one of a few exact names, or one ending in _token/_secret/_key/
# _password/_apikey (any case; - for _; camelCase accessToken too). Not tokens, max_tokens.
_NAME = (r"(?:[A-Za-z0-9_.-]{0,64}(?:[_-](?i:token|secret|key|password|apikey)"
         r"|(?<=[a-z0-9])(?:Token|Secret|Key|Password|ApiKey))"
         r"|(?i:token|secret|password|passwd|apikey|authorization|(?:set[_-])?cookie"
         r"|credentials))")
_SECRET_NAME = re.compile(_NAME)

# Each alternative's first characters lead (the lookahead), so a 1 MB output costs ~20 ms.
_VALUES = re.compile(
    r"(?=[BbsgAx]|eyJ)\b(?:(?P<bearer>[Bb]earer\s+)[A-Za-z0-9._~+/-]{16,}=*"
    r"|sk-[A-Za-z0-9_-]{16,}"  # Anthropic (sk-ant-...), OpenAI
    r"|gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|A[KS]IA[0-9A-Z]{16}\b"  # AWS access key ids
    r"|xox[abposr]-[A-Za-z0-9-]{8,}"  # Slack
    r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)")  # JWT
# NAME=value, NAME: value, "NAME": "value": found by the name's last word, then the whole
# NAME (read backwards) is checked by secret_key (aws_secret_access_key=..., TOKEN: ...)
_ASSIGNED = re.compile(r"(?=[TtSsKkPpAaCc])(?i:token|secret|key|password|passwd|apikey"
                       r"|authorization|cookie|credentials)[\"']?[ \t]*[=:][ \t]*[\"']?"
                       r"(?P<value>[^\s\"'`,;&|=]{8,})")
_NAME_START = re.compile(r"[A-Za-z0-9_.-]{0,64}$")


@functools.lru_cache(maxsize=4096)
def secret_key(name) -> bool:
    """Whether a key (or environment variable) by this name holds a secret: api_key,
    accessToken, X-Api-Key, GITHUB_TOKEN yes; tokens, input_tokens, max_tokens no."""
    return _SECRET_NAME.fullmatch(str(name)) is not None


def redact(value):
    """A copy of a JSON-like value (dicts, lists, strings) with every secret masked."""
    return _walk(value, _env_pattern(_env_secrets()))


def redact_text(text: str) -> str:
    return _text(text, _env_pattern(_env_secrets()))


def _walk(value, env):
    if isinstance(value, str):
        return _text(value, env)
    if isinstance(value, dict):
        # an empty or absent secret (None, "") stays visible: it says there is none
        return {k: MASK if secret_key(k) and v not in (None, "") else _walk(v, env)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, env) for v in value]
    return value


def _text(text: str, env) -> str:
    text = _ASSIGNED.sub(_mask_assigned, _VALUES.sub(_mask, text))
    return env.sub(MASK, text) if env is not None else text


def _mask(match) -> str:
    return match.group("bearer") + MASK if match.group("bearer") else MASK


def _mask_assigned(match) -> str:
    text, start = match.string, match.start()
    name = _NAME_START.search(text, max(0, start - 64), start).group(0).lstrip(".-")
    if not secret_key(name + text[start:match.start("value")].rstrip("\"': \t=")):
        return match.group(0)
    return text[start:match.start("value")] + MASK


def _env_secrets() -> tuple:
    """The values to mask; the mesh's own MESH_* variables name things (MESH_SPAWN_KEY is a
    supervisor's key, e.g. builder-1), they hold no credentials."""
    return tuple(sorted({v for k, v in os.environ.items() if len(v) >= MIN_ENV_VALUE
                         and secret_key(k) and not k.startswith("MESH_")}, key=len, reverse=True))


@functools.lru_cache(maxsize=8)
def _env_pattern(values: tuple):
    """One alternation of the environment's secret values, longest first."""
    return re.compile("|".join(map(re.escape, values))) if values else None
