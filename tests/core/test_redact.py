"""Secrets are redacted before a prompt is stored; ordinary text is left as written."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stillroom.redact import is_secret_key, redact, redact_text

OPENAI = "sk-proj-" + "Q7xR2m" * 8
ANTHROPIC = "sk-ant-api03-" + "aB3dE5fG7h" * 9 + "-AA"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXNlY3JldA"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Use the key {OPENAI} to call it.", "Use the key [REDACTED:openai-key] to call it."),
        ("old style sk-" + "a1B2c3D4" * 6, "old style [REDACTED:openai-key]"),
        (f"ANTHROPIC_API_KEY={ANTHROPIC}", "ANTHROPIC_API_KEY=[REDACTED:anthropic-key]"),
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer [REDACTED:jwt]"),
        (
            "curl -H 'Authorization: Bearer 9f8e7d6c5b4a39281706abcdef' https://api.example.com",
            "curl -H 'Authorization: Bearer [REDACTED:bearer-token]' https://api.example.com",
        ),
        (
            "Authorization: Basic dXNlcjpwYXNzd29yZA==",
            "Authorization: Basic [REDACTED:credentials]",
        ),
        (
            "git clone https://ghp_" + "x7Yz" * 9 + "@github.com/acme/repo",
            "git clone https://[REDACTED:github-token]@github.com/acme/repo",
        ),
        ("token github_pat_11ABCDEFG0" + "a" * 40, "token [REDACTED:github-token]"),
        (
            "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
            "aws_access_key_id = [REDACTED:aws-access-key-id]",
        ),
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key=[REDACTED:secret]",
        ),
        (
            "SLACK_BOT_TOKEN=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "SLACK_BOT_TOKEN=[REDACTED:slack-token]",
        ),
        (
            "maps key AIzaSyA1bC2dE3fG4hI5jK6lM7nO8pQ9rS0tUvW!",
            "maps key [REDACTED:google-api-key]!",
        ),
        (f"key file:\n{PEM}\nthanks", "key file:\n[REDACTED:private-key]\nthanks"),
        (
            "the database is postgres://admin:hunter2-Very-Secret@db.example.com/prod",
            "the database is postgres://admin:[REDACTED:password]@db.example.com/prod",
        ),
        (
            "GET https://example.com/v1/items?page=2&api_key=abc123def456&password=letmein",
            "GET https://example.com/v1/items?page=2&api_key=[REDACTED:api-key]"
            "&password=[REDACTED:password]",
        ),
        ("login with password: hunter2!", "login with password: [REDACTED:password]"),
        (
            'config {"api_key": "abc", "password": "correct horse battery", "retries": 3}',
            'config {"api_key": "[REDACTED:api-key]", "password": "[REDACTED:password]",'
            ' "retries": 3}',
        ),
    ],
)
def test_secrets_become_markers(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Classify this support ticket: my order #4821 arrived broken on 2024-03-02.",
        "Reset password: click the link we sent. The secret to good bread is time.",
        "Bearer bonds were common in 1920. Each token: a word piece. max_tokens=256",
        "Order 123e4567-e89b-12d3-a456-426614174000 shipped; commit 9fceb02d0ae598e95dc970b7.",
        "Ask the sk-learn docs; see https://example.com/a/b?page=3&sort=desc or mail a@b.org.",
        "The secretary said the password policy changed; tokens expire after 30 days.",
        "Summarize: 'The risk-management-committee-approved-budget was 1.2 million.'",
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


def test_redact_walks_json_and_returns_new_objects() -> None:
    request = {
        "model": "gpt-4o-mini",
        "max_tokens": 64,
        "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k", "Accept": "text/plain"},
        "messages": [
            {"role": "system", "content": "You sort tickets."},
            {"role": "user", "content": [{"type": "text", "text": f"my key is {OPENAI}"}]},
        ],
        "metadata": {"token": "t0ken-value", "tokens_used": 12, "api_key": None},
    }
    out = redact(request)
    assert out["headers"] == {
        "Authorization": "[REDACTED:authorization]",
        "X-Api-Key": "[REDACTED:x-api-key]",
        "Accept": "text/plain",
    }
    assert out["messages"][0] == {"role": "system", "content": "You sort tickets."}
    assert out["messages"][1]["content"][0]["text"] == "my key is [REDACTED:openai-key]"
    assert out["metadata"] == {"token": "[REDACTED:token]", "tokens_used": 12, "api_key": None}
    assert out["max_tokens"] == 64 and out["model"] == "gpt-4o-mini"
    assert request["headers"]["Authorization"] == "Bearer abc"  # the input is not changed
    assert out is not request and out["messages"] is not request["messages"]
    assert redact(None) is None and redact(3.5) == 3.5 and redact(True) is True


def test_secret_key_names() -> None:
    for name in ("api_key", "API-KEY", "apikey", "Authorization", "x-api-key", "client_secret"):
        assert is_secret_key(name)
    for name in ("openai_api_key", "db_password", "access_token", "password"):
        assert is_secret_key(name)
    for name in ("max_tokens", "prompt_tokens", "tokens", "key", "model", "secretary"):
        assert not is_secret_key(name)


def test_redaction_is_stable_and_idempotent() -> None:
    first = redact_text(f"call with {OPENAI} then {JWT}")
    assert redact_text(first) == first
    other = redact_text(f"call with {'sk-proj-' + 'Zz9' * 20} then {JWT[:-3]}xyz")
    assert other == first  # two calls differing only in secrets read the same


# Formats added for the security review: each must fail to survive, and ordinary text stays.

SLACK_HOOK = "T0AB12CD3/B0EF45GH6/" + "aB3dE5fG7h" * 2 + "xyzw"
AZURE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("refresh xoxe-1-" + "My0xLTMx" * 4, "refresh [REDACTED:slack-token]"),
        (
            "app token xapp-1-A0123456789-1234567890-" + "ab12" * 8,
            "app token [REDACTED:slack-token]",
        ),
        (
            f"post to https://hooks.slack.com/services/{SLACK_HOOK} now",
            "post to https://hooks.slack.com/services/[REDACTED:slack-webhook] now",
        ),
        ("glpat-" + "Xy9_Zz8-Ww7v" * 2, "[REDACTED:gitlab-token]"),
        ("NPM: npm_" + "a1B2c3D4e5F6" * 3, "NPM: [REDACTED:npm-token]"),
        ("pypi-AgEIcHlwaS5vcmc" + "CJDU3OTM2ZjE5LTQ3" * 4, "[REDACTED:pypi-token]"),
        ("groq gsk_" + "Qw3Er5Ty7Ui9" * 4, "groq [REDACTED:groq-key]"),
        ("grok xai-" + "Op0As2Df4Gh6" * 6, "grok [REDACTED:xai-key]"),
        ("oauth ya29.a0AfH6SM" + "Bx3dE_xa-mP1" * 3, "oauth [REDACTED:google-oauth-token]"),
        (
            f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={AZURE_KEY};"
            "EndpointSuffix=core.windows.net",
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=[REDACTED:azure-key];"
            "EndpointSuffix=core.windows.net",
        ),
        (
            "https://acme.blob.core.windows.net/c/b.txt?sv=2022-11-02&sr=b"
            "&sig=Zm9vYmFy%2BYmF6cXV4%2FcXV1eA%3D%3D&se=2030-01-01",
            "https://acme.blob.core.windows.net/c/b.txt?sv=2022-11-02&sr=b"
            "&sig=[REDACTED:azure-sas-signature]&se=2030-01-01",
        ),
        (
            "SENDGRID=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",
            "SENDGRID=[REDACTED:sendgrid-key]",
        ),
        ("hook secret whsec_" + "Mn4Bv6Cx8Zl0" * 3, "hook secret [REDACTED:stripe-webhook-secret]"),
        (
            "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw4 and"
            " https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw4/getMe",
            "bot [REDACTED:telegram-token] and"
            " https://api.telegram.org/bot[REDACTED:telegram-token]/getMe",
        ),
        (
            "discord MTA4NjQyMzQ1Njc4OTAxMjM0NQ.GxYz12.abcdefghijklmnopqrstuvwxyz0123456789",
            "discord [REDACTED:discord-token]",
        ),
        (
            "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "[REDACTED:aws-access-key-id] [REDACTED:aws-secret-key]",
        ),
        (
            '{"accessToken": "abc", "clientSecret": "x", "privateKey": "y", "api-key": "z"}',
            '{"accessToken": "[REDACTED:token]", "clientSecret": "[REDACTED:secret]",'
            ' "privateKey": "[REDACTED:private-key]", "api-key": "[REDACTED:api-key]"}',
        ),
        ("x-api-key: abc123def", "x-api-key: [REDACTED:api-key]"),
        (
            "password: letmein\n  db_secret: breadcrumbs  # old\nname: pat\n",
            "password: [REDACTED:password]\n  db_secret: [REDACTED:secret]  # old\nname: pat\n",
        ),
        (
            "DB_HOST=db\nDB_PASSWORD=hunter2\nexport GITHUB_TOKEN=abcdef\n",
            "DB_HOST=db\nDB_PASSWORD=[REDACTED:password]\nexport GITHUB_TOKEN=[REDACTED:token]\n",
        ),
        ("GET /v1/me?token=abc&page=2", "GET /v1/me?token=[REDACTED:token]&page=2"),
        ('{"password": "ab\\"cd"}', '{"password": "[REDACTED:password]"}'),
        ('"{\\"password\\": \\"hunter2\\"}"', '"{\\"password\\": \\"[REDACTED:password]\\"}"'),
        # In JSON text a secret on a new line follows the escape \n.
        (
            '"DB_PASSWORD=x1y2z3\\nkey:\\nsk-' + "a1B2c3D4" * 3 + '"',
            '"DB_PASSWORD=[REDACTED:password]\\nkey:\\n[REDACTED:openai-key]"',
        ),
    ],
)
def test_more_secret_formats(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Signature: Jane Doe, 3 March. The config=prod build passed; see sig. 4 of the report.",
        "Password: see the sheet we shared with you last week.",
        "Mr. SG. Smith paid 123456789 dollars; ratio 12:34 at 10:45.",
        "Use xai-grok for jokes and gsk_ as a prefix; npm_config_cache is a variable.",
        "MTA.abc.def is not a token; AKIA is an acronym; AccountKey is a field name.",
        "eos_token: </s>\nmodel: gpt-4o\nmax_tokens: 256\n",
    ],
)
def test_more_ordinary_text_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


def test_camel_and_kebab_case_secret_key_names() -> None:
    names = ["accessToken", "clientSecret", "privateKey", "api-key", "x-api-key", "refreshToken"]
    names += ["authToken", "sessionToken", "SecretAccessKey", "XApiKey", "APIKey", "GITHUB_TOKEN"]
    for name in names:
        assert is_secret_key(name), name
    for name in ("maxTokens", "tokenCount", "keyName", "secretary", "primaryKey", "tokens"):
        assert not is_secret_key(name), name
    out = redact({"auth": {"accessToken": "a", "refreshToken": "b", "expiresIn": 3600}})
    assert out["auth"] == {
        "accessToken": "[REDACTED:access-token]",
        "refreshToken": "[REDACTED:refresh-token]",
        "expiresIn": 3600,
    }


# Property tests: random secrets of every shape, planted in random text, JSON and URLs.

ALNUM = string.ascii_letters + string.digits
TOKEN = ALNUM + "_-"
B64 = ALNUM + "+/"
UPPER_DIGITS = string.ascii_uppercase + string.digits


def chars(alphabet: str, low: int, high: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=low, max_size=low if high is None else high)


def joined(*parts: st.SearchStrategy[str] | str) -> st.SearchStrategy[str]:
    return st.tuples(*(st.just(p) if isinstance(p, str) else p for p in parts)).map("".join)


@dataclass(frozen=True)
class Planted:
    """A secret as it is written (`text`), what must not survive (`secrets`), and how it goes
    into a URL's query string (`query`: (name, value) pairs; a None name: any name)."""

    text: str
    secrets: tuple[str, ...]
    query: tuple[tuple[str | None, str], ...]


def token(shape: st.SearchStrategy[str]) -> st.SearchStrategy[Planted]:
    """A secret whose shape says what it is: anywhere, under any name."""
    return shape.map(lambda t: Planted(t, (t,), ((None, t),)))


def _aws_pair(key_id: str, secret: str, sep: str, flip: bool) -> Planted:
    text = f"{secret}{sep}{key_id}" if flip else f"{key_id}{sep}{secret}"
    return Planted(
        text, (key_id, secret), (("AWSAccessKeyId", key_id), ("aws_secret_access_key", secret))
    )


def _azure(account: str, key: str) -> Planted:
    text = (
        f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey={key};"
        "EndpointSuffix=core.windows.net"
    )
    return Planted(text, (key,), ((None, text),))


def _sas(account: str, sig: str) -> Planted:
    url = f"https://{account}.blob.core.windows.net/c/b.txt?sv=2022-11-02&sig={quote(sig, safe='')}"
    return Planted(url, (sig,), (("sig", sig),))


def _webhook(team: str, bot: str, secret: str) -> Planted:
    path = f"T{team}/B{bot}/{secret}"
    url = f"https://hooks.slack.com/services/{path}"
    return Planted(url, (path,), ((None, url),))


AWS_KEY_ID = joined(st.sampled_from(["AKIA", "ASIA"]), chars(UPPER_DIGITS, 16))
ACCOUNT = chars(string.ascii_lowercase + string.digits, 3, 24)
PEM_BODY = st.lists(chars(B64, 64), min_size=1, max_size=4).map("\n".join)

FORMATS: dict[str, st.SearchStrategy[Planted]] = {
    "openai": token(
        joined(st.sampled_from(["sk-", "sk-proj-", "sk-svcacct-"]), chars(TOKEN, 20, 60))
    ),
    "anthropic": token(joined("sk-ant-api03-", chars(TOKEN, 20, 95))),
    "openrouter": token(joined("sk-or-v1-", chars(TOKEN, 20, 64))),
    "github": token(
        st.one_of(
            joined(st.sampled_from(["ghp_", "gho_", "ghs_"]), chars(ALNUM, 36)),
            joined("github_pat_", chars(ALNUM + "_", 22, 82)),
        )
    ),
    "gitlab": token(joined("glpat-", chars(TOKEN, 20, 40))),
    "aws-key-id": token(AWS_KEY_ID),
    "aws-secret-key": st.builds(
        _aws_pair,
        AWS_KEY_ID,
        chars(B64, 40),
        st.sampled_from([" ", "\n", ", ", '", "', " = ", "\t| "]),
        st.booleans(),
    ),
    "aws-secret-named": chars(B64, 40).map(
        lambda s: Planted(f"aws_secret_access_key = {s}", (s,), (("aws_secret_access_key", s),))
    ),
    "slack": token(
        joined(
            st.sampled_from(["xoxb-", "xoxp-", "xoxe-1-", "xoxe.xoxp-1-", "xapp-1-"]),
            chars(ALNUM + "-", 10, 60),
        )
    ),
    "slack-webhook": st.builds(
        _webhook, chars(UPPER_DIGITS, 8, 10), chars(UPPER_DIGITS, 8, 10), chars(ALNUM, 24)
    ),
    "google-api-key": token(joined("AIza", chars(TOKEN, 35))),
    "google-oauth": token(joined("ya29.", chars(TOKEN, 20, 120))),
    "stripe": token(
        st.one_of(
            joined(st.sampled_from(["sk_live_", "rk_test_"]), chars(ALNUM, 16, 60)),
            joined("whsec_", chars(ALNUM, 24, 40)),
        )
    ),
    "huggingface": token(joined("hf_", chars(ALNUM, 30, 40))),
    "npm": token(joined("npm_", chars(ALNUM, 36))),
    "pypi": token(joined("pypi-AgEIcHlwaS5vcmc", chars(TOKEN, 50, 150))),
    "groq": token(joined("gsk_", chars(ALNUM, 52))),
    "xai": token(joined("xai-", chars(ALNUM, 80))),
    "azure-key": st.builds(_azure, ACCOUNT, joined(chars(B64, 86), "==")),
    "azure-sas": st.builds(_sas, ACCOUNT, joined(chars(B64, 43), "=")),
    "sendgrid": token(joined("SG.", chars(TOKEN, 22), ".", chars(TOKEN, 43))),
    "telegram": token(joined(chars(string.digits, 8, 10), ":AA", chars(TOKEN, 33))),
    "discord": token(
        joined(
            st.sampled_from("MNO"),
            chars(TOKEN, 23, 25),
            ".",
            chars(TOKEN, 6),
            ".",
            chars(TOKEN, 27, 38),
        )
    ),
    "jwt": token(
        joined("eyJ", chars(TOKEN, 8, 40), ".", chars(TOKEN, 8, 40), ".", chars(TOKEN, 0, 40))
    ),
    "private-key": PEM_BODY.map(
        lambda body: Planted(
            f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----", (body,), ()
        )
    ),
}

WORDS = st.lists(st.text(max_size=12), max_size=8)
SEPARATORS = st.sampled_from([" ", "\n", "\t", ", ", ": ", " | "])
SECRET_NAMES = ["password", "api_key", "accessToken", "client-secret", "DB_PASSWORD", "token"]


def assert_gone(out: str, planted: Planted) -> None:
    """No secret of `planted` in `out`: as written, percent-encoded, or JSON-escaped (twice)."""
    for secret in planted.secrets:
        once = json.dumps(secret)[1:-1]
        for form in (secret, quote(secret, safe=""), once, json.dumps(once)[1:-1]):
            assert form not in out, (form, out)


@st.composite
def prose(draw: st.DrawFn, planted: Planted) -> str:
    """Random text (any characters) with the secret as one of its words."""
    words = draw(WORDS)
    at = draw(st.integers(0, len(words)))
    return draw(SEPARATORS).join([*words[:at], planted.text, *words[at:]])


@pytest.mark.parametrize("kind", sorted(FORMATS))
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_secrets_in_random_text_never_survive(kind: str, data: st.DataObject) -> None:
    planted = data.draw(FORMATS[kind])
    text = data.draw(prose(planted))
    for form in (text, json.dumps(text), json.dumps(text, ensure_ascii=False)):
        assert_gone(redact_text(form), planted)


@pytest.mark.parametrize("kind", sorted(FORMATS))
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_secrets_in_json_never_survive(kind: str, data: st.DataObject) -> None:
    planted = data.draw(FORMATS[kind])
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
    doc: dict[str, Any] = data.draw(st.dictionaries(st.text(max_size=10), scalars, max_size=4))
    doc[data.draw(st.text(max_size=10))] = planted.text  # under any key
    doc["nested"] = [{data.draw(st.sampled_from(SECRET_NAMES)): planted.text}, planted.text]
    dumped = json.dumps(doc)
    assert_gone(json.dumps(redact(doc)), planted)
    assert_gone(redact_text(dumped), planted)
    assert_gone(redact_text(json.dumps(doc, ensure_ascii=False, indent=2)), planted)
    assert_gone(redact_text(json.dumps({"content": dumped})), planted)  # JSON in a string


NAMES = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)


@pytest.mark.parametrize("kind", sorted(k for k in FORMATS if k != "private-key"))
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_secrets_in_urls_never_survive(kind: str, data: st.DataObject) -> None:
    planted = data.draw(FORMATS[kind])
    params = [(data.draw(NAMES), data.draw(chars(ALNUM, 0, 10)))]
    for name, value in planted.query:
        params.append((name or data.draw(NAMES), quote(value, safe="")))
    params.append((data.draw(st.sampled_from(SECRET_NAMES)), quote(planted.secrets[0], safe="")))
    host = data.draw(st.sampled_from(["api.example.com", "127.0.0.1:8080", "[::1]"]))
    query = "&".join(f"{k}={v}" for k, v in params)
    userinfo = f"{data.draw(NAMES)}:{quote(planted.secrets[0], safe='')}"
    for url in (f"https://{host}/v1/items?{query}", f"https://{userinfo}@{host}/v1"):
        text = data.draw(prose(Planted(url, (), ())))
        assert_gone(redact_text(text), planted)
        assert_gone(redact_text(json.dumps({"url": url})), planted)
