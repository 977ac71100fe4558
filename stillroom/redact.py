"""Secrets out of prompts before they are stored: API keys, tokens, passwords, private keys.

Each secret becomes a stable marker such as `[REDACTED:openai-key]`, so a redacted prompt
still reads sensibly and two calls that differ only in their key look the same to the
repetition detector. Deliberately left alone (too costly in false alarms on ordinary text):
UUIDs, hex digests and other ids, numbers, and secrets with no recognisable shape or name
("my password is hunter2" stays as written).
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = r"[A-Za-z0-9_-]"
_START = r"(?<![A-Za-z0-9_-])"

# Order matters: the most specific shapes go first, so their marker says what they were.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----.*?"
            r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----|\Z)",
            re.S,
        ),
        "private-key",
    ),
    (re.compile(rf"{_START}sk-ant-{_TOKEN}{{20,}}"), "anthropic-key"),
    (re.compile(rf"{_START}sk-or-{_TOKEN}{{20,}}"), "openrouter-key"),
    (re.compile(rf"{_START}sk-{_TOKEN}{{20,}}"), "openai-key"),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"), "github-token"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "aws-access-key-id"),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "slack-token"),
    (re.compile(rf"\bAIza{_TOKEN}{{35}}"), "google-api-key"),
    (re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"), "stripe-key"),
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}"), "huggingface-token"),
    (re.compile(rf"{_START}eyJ{_TOKEN}{{8,}}\.{_TOKEN}{{8,}}\.{_TOKEN}*"), "jwt"),
]

# scheme://user:password@host keeps the user and the host.
_URL_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^\s:/@\[\]]+:)([^\s@/\[\]]+)(@)", re.I)

# "Authorization: Basic ...", "Bearer ..." (the token must hold a digit: "Bearer bonds" stays).
_AUTH = re.compile(
    r"(?i)\b((?:proxy-)?authorization\s*[:=]\s*[\"']?(?:bearer|basic|token|digest)\s+)"
    r"([^\s\"',;\[]{6,})"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)((?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{12,}=*)")

# password=..., "api_key": "...", access_token: ... (in text, query strings, JSON in text).
_NAMED = (
    r"password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|credentials?|signature"
)
_KEY_VALUE = re.compile(
    rf"(?i)(?<![A-Za-z0-9_.-])([A-Za-z0-9_.-]*?(?:{_NAMED}))"
    r"([\"']?\s*([:=])\s*)"
    r"(?:\"([^\"\n]*)\"|'([^'\n]*)'|([^\s\"',;&<>\[\]{}()]+))"
)

_SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "x_api_key",
        "api_secret",
        "authorization",
        "proxy_authorization",
        "password",
        "passwd",
        "passphrase",
        "secret",
        "secret_key",
        "client_secret",
        "aws_secret_access_key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "session_token",
        "private_key",
        "cookie",
        "set_cookie",
    }
)
_SECRET_SUFFIXES = ("_api_key", "_apikey", "_secret", "_password", "_access_token")


def redact_text(text: str) -> str:
    """The text with every secret it recognises replaced by a `[REDACTED:kind]` marker."""
    for pattern, kind in _PATTERNS:
        text = pattern.sub(marker(kind), text)
    text = _URL_PASSWORD.sub(lambda m: f"{m[1]}{marker('password')}{m[3]}", text)
    text = _BEARER.sub(lambda m: f"{m[1]}{marker('bearer-token')}", text)
    text = _AUTH.sub(lambda m: f"{m[1]}{marker('credentials')}", text)
    return _KEY_VALUE.sub(_named_value, text)


def redact(obj: Any) -> Any:
    """A copy of a JSON-like value with secrets redacted: every string through `redact_text`,
    and the whole string value of a key that names a secret (api_key, authorization, ...)."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: _redact_item(k, v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj


def is_secret_key(key: str) -> bool:
    """Whether a dict key names a secret (case and -/_ insensitive)."""
    name = key.strip().lower().replace("-", "_")
    return name in _SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def marker(kind: str) -> str:
    """The text that stands in for a redacted secret."""
    return f"[REDACTED:{kind}]"


def _redact_item(key: Any, value: Any) -> Any:
    if isinstance(key, str) and isinstance(value, str) and value and is_secret_key(key):
        return marker(key.strip().lower().replace("_", "-"))
    return redact(value)


def _named_value(match: re.Match[str]) -> str:
    """Redact the value after a secret's name; an unquoted `name: value` only when the value
    looks like a secret (prose such as "password: click the link" stays)."""
    name, separator, sign = match[1], match[2], match[3]
    quoted = match[4] if match[4] is not None else match[5]
    value = quoted if quoted is not None else match[6]
    if not value or "[REDACTED" in value:
        return match[0]
    if quoted is None and sign == ":" and not _looks_secret(value):
        return match[0]
    kind = _kind_of(name)
    quote = '"' if match[4] is not None else "'" if match[5] is not None else ""
    return f"{name}{separator}{quote}{marker(kind)}{quote}"


def _kind_of(name: str) -> str:
    lowered = name.lower()
    kinds = (("pass", "password"), ("private", "private-key"), ("secret", "secret"))
    for part, kind in (*kinds, ("token", "token"), ("key", "api-key")):
        if part in lowered:
            return kind
    return "secret"


def _looks_secret(value: str) -> bool:
    """Random-looking: a digit or symbol among letters, or long."""
    has_other = bool(re.search(r"[^A-Za-z]", value))
    return (has_other and len(value) >= 6) or len(value) >= 20
