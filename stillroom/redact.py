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
# Right after a JSON escape (\n, \t, \u00e9) a secret starts too: redact_text may be given
# JSON text, where a secret on a new line follows the letter n.
_ESCAPED = r"(?<=\\[nrtbf])|(?<=\\u[0-9A-Fa-f]{4})"
_START = rf"(?:{_ESCAPED}|(?<![A-Za-z0-9_-]))"
_WORD = rf"(?:{_ESCAPED}|\b)"

# A secret behind a name that says what it is: the name stays, the value goes.
_NAMED_SHAPES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            rf"(?i)((?:{_WORD}|(?<=%2F))hooks\.slack\.com(?:/|%2F)(?:services|workflows|triggers)"
            r"(?:/|%2F))"
            r"[A-Za-z0-9_/%-]{8,}"
        ),
        "slack-webhook",
    ),
    # Azure connection strings; the value may be percent-encoded inside a URL.
    (
        re.compile(
            rf"(?i)((?:{_ESCAPED}|(?<=%3B)|(?<![A-Za-z0-9]))"
            r"(?:Account|SharedAccess)Key\s*(?:=|%3D)\s*)"
            r"[A-Za-z0-9+/%]{16,}=*"
        ),
        "azure-key",
    ),
    (re.compile(rf"(?i)({_START}sig(?:=|%3D))[A-Za-z0-9%+/_-]{{10,}}=*"), "azure-sas-signature"),
]

# Order matters: the most specific shapes go first, so their marker says what they were, and
# tokens of several dotted parts go before the prefixes that could cut one of them in two.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----.*?"
            r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----|\Z)",
            re.S,
        ),
        "private-key",
    ),
    (re.compile(rf"{_START}eyJ{_TOKEN}{{8,}}\.{_TOKEN}{{8,}}\.{_TOKEN}*"), "jwt"),
    (re.compile(rf"{_START}SG\.{_TOKEN}{{16,}}\.{_TOKEN}{{16,}}"), "sendgrid-key"),
    # A user id in base64 (it starts M, N or O), a timestamp, an HMAC.
    (
        re.compile(rf"{_START}[MNO]{_TOKEN}{{23,27}}\.{_TOKEN}{{6,7}}\.{_TOKEN}{{27,}}"),
        "discord-token",
    ),
    # Telegram: bot id, colon, 35 characters; also inside api.telegram.org/bot<token>/ URLs.
    (
        re.compile(rf"(?:{_START}|(?<=bot))[0-9]{{5,12}}(?::|%3[Aa])AA{_TOKEN}{{30,}}"),
        "telegram-token",
    ),
    (re.compile(rf"{_START}sk-ant-{_TOKEN}{{20,}}"), "anthropic-key"),
    (re.compile(rf"{_START}sk-or-{_TOKEN}{{20,}}"), "openrouter-key"),
    (re.compile(rf"{_START}sk-{_TOKEN}{{20,}}"), "openai-key"),
    (
        re.compile(rf"{_WORD}(?:gh[pousr]_[A-Za-z0-9]{{30,}}|github_pat_[A-Za-z0-9_]{{22,}})"),
        "github-token",
    ),
    (re.compile(rf"{_START}gl(?:pat|dt|rt|ptt|soat)-[A-Za-z0-9_.-]{{20,}}"), "gitlab-token"),
    (re.compile(rf"{_WORD}(?:AKIA|ASIA)[0-9A-Z]{{16}}\b"), "aws-access-key-id"),
    (re.compile(rf"{_WORD}xox[abeprs](?:\.xox[abeprs])?-[A-Za-z0-9-]{{10,}}"), "slack-token"),
    (re.compile(rf"{_WORD}xapp-[A-Za-z0-9-]{{10,}}"), "slack-token"),
    (re.compile(rf"{_WORD}AIza{_TOKEN}{{35}}"), "google-api-key"),
    (re.compile(rf"{_START}ya29\.{_TOKEN}{{20,}}"), "google-oauth-token"),
    (re.compile(rf"{_WORD}[rs]k_(?:live|test)_[A-Za-z0-9]{{16,}}"), "stripe-key"),
    (re.compile(rf"{_START}whsec_[A-Za-z0-9]{{24,}}"), "stripe-webhook-secret"),
    (re.compile(rf"{_WORD}hf_[A-Za-z0-9]{{30,}}"), "huggingface-token"),
    (re.compile(rf"{_START}npm_[A-Za-z0-9]{{30,}}"), "npm-token"),
    (re.compile(rf"{_START}pypi-Ag{_TOKEN}{{40,}}"), "pypi-token"),
    (re.compile(rf"{_START}gsk_[A-Za-z0-9]{{30,}}"), "groq-key"),
    (re.compile(rf"{_START}xai-[A-Za-z0-9]{{30,}}"), "xai-key"),
]

# An AWS secret key has no prefix: 40 base64 characters, taken as one only next to a key id.
_AWS_KEY_ID = re.compile(rf"{_WORD}(?:AKIA|ASIA)[0-9A-Z]{{16}}\b")
_AWS_SECRET = re.compile(
    rf"(?:{_ESCAPED}|(?<![A-Za-z0-9/+=]))[A-Za-z0-9/+]{{40}}(?![A-Za-z0-9/+=])"
)
_AWS_NEAR = 200  # characters between a key id and its secret

# scheme://user:password@host keeps the user and the host.
_URL_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^\s:/@\[\]]+:)([^\s@/\[\]]+)(@)", re.I)

# A backslash in a value, unless it starts a JSON escape (the value ends there).
_LONE_BACKSLASH = r"\\(?![nrtbfu\"\\/])"

# "Authorization: Basic ...", "Bearer ..." (the token must hold a digit: "Bearer bonds" stays).
_AUTH = re.compile(
    rf"(?i){_WORD}((?:proxy-)?authorization\s*[:=]\s*[\"']?(?:bearer|basic|token|digest)\s+)"
    rf"((?:[^\s\"',;\[\\]|{_LONE_BACKSLASH}){{6,}})"
)
_BEARER = re.compile(rf"(?i){_WORD}(bearer\s+)((?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{{12,}}=*)")

# password=..., "api_key": "...", accessToken: ..., DB_PASSWORD=... (text, query strings,
# .env and YAML lines, JSON in text, and JSON inside a JSON string, whose quotes are \").
_NAMED = (
    r"password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|credentials?|signature"
)
_KEY_VALUE = re.compile(
    rf"(?i)(?:{_ESCAPED}|(?<![A-Za-z0-9_.-]))([A-Za-z0-9_.-]*?(?:{_NAMED}))"
    r"((?:\\?[\"'])?\s*([:=])\s*)"
    r"(?:\"((?:[^\"\\\n]|\\.)*)\""
    r"|'([^'\n]*)'"
    r"|\\\"((?:[^\"\\\n]|\\[^\"\n])*)\\\""
    rf"|((?:[^\s\"',;&<>\[\]{{}}()\\]|{_LONE_BACKSLASH})+))"
)
# What may stand before a YAML key or a .env name on its line.
_LINE_START = re.compile(r"[ \t]*(?:-[ \t]+|export[ \t]+)?[\"']?\Z")
_LINE_END = re.compile(r"[ \t]*(?:#[^\n]*)?(?:\n|\Z)")

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
        "secret_access_key",
        "aws_secret_access_key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "session_token",
        "private_key",
        "credentials",
        "cookie",
        "set_cookie",
    }
)
_SECRET_SUFFIXES = (
    "_api_key",
    "_apikey",
    "_secret",
    "_secret_key",
    "_password",
    "_passwd",
    "_passphrase",
    "_private_key",
    "_token",
    "_credentials",
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def redact_text(text: str) -> str:
    """The text with every secret it recognises replaced by a `[REDACTED:kind]` marker."""
    text = _redact_aws_secrets(text)
    for pattern, kind in _NAMED_SHAPES:
        text = pattern.sub(rf"\1{marker(kind)}", text)
    for pattern, kind in _PATTERNS:
        text = pattern.sub(marker(kind), text)
    text = _URL_PASSWORD.sub(lambda m: f"{m[1]}{marker('password')}{m[3]}", text)
    text = _BEARER.sub(lambda m: f"{m[1]}{marker('bearer-token')}", text)
    text = _AUTH.sub(lambda m: f"{m[1]}{marker('credentials')}", text)
    return _KEY_VALUE.sub(_named_value, text)


def redact(obj: Any) -> Any:
    """A copy of a JSON-like value with secrets redacted: every string through `redact_text`,
    and the whole string value of a key that names a secret (api_key, accessToken, ...)."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: _redact_item(k, v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj


def is_secret_key(key: str) -> bool:
    """Whether a dict key names a secret (case, camelCase and -/_ insensitive)."""
    plain = key.strip().lower().replace("-", "_")
    snake = _CAMEL.sub("_", key.strip()).lower().replace("-", "_")
    return any(n in _SECRET_KEYS or n.endswith(_SECRET_SUFFIXES) for n in (plain, snake))


def marker(kind: str) -> str:
    """The text that stands in for a redacted secret."""
    return f"[REDACTED:{kind}]"


def _redact_item(key: Any, value: Any) -> Any:
    if isinstance(key, str) and isinstance(value, str) and value and is_secret_key(key):
        return marker(_CAMEL.sub("-", key.strip()).lower().replace("_", "-"))
    return redact(value)


def _redact_aws_secrets(text: str) -> str:
    """40-character base64 runs within _AWS_NEAR characters of an AWS access key id."""
    ids = [m.span() for m in _AWS_KEY_ID.finditer(text)]
    if not ids:
        return text

    def near(match: re.Match[str]) -> str:
        start, end = match.span()
        if any(s - _AWS_NEAR <= end and start <= e + _AWS_NEAR for s, e in ids):
            return marker("aws-secret-key")
        return match[0]

    return _AWS_SECRET.sub(near, text)


def _named_value(match: re.Match[str]) -> str:
    """Redact the value after a secret's name; an unquoted `name: value` only when the value
    looks like a secret or is the whole value of a YAML line (prose such as "password: click
    the link" stays)."""
    name, separator, sign = match[1], match[2], match[3]
    quotes = ('"', "'", '\\"')
    quote = next((q for q, v in zip(quotes, match.groups()[3:6], strict=True) if v is not None), "")
    value = next((v for v in match.groups()[3:] if v is not None), "")
    if not value or "[REDACTED" in value:
        return match[0]
    if not quote and sign == ":" and not (_looks_secret(value) or _yaml_value(match)):
        return match[0]
    return f"{name}{separator}{quote}{marker(_kind_of(name))}{quote}"


def _yaml_value(match: re.Match[str]) -> bool:
    """Whether the match is a whole `key: value` line, as in YAML."""
    text = match.string
    line_start = text.rfind("\n", 0, match.start()) + 1
    before = text[line_start : match.start()]
    return bool(_LINE_START.match(before)) and bool(_LINE_END.match(text, match.end()))


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
