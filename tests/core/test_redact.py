"""Secrets are redacted before a prompt is stored; ordinary text is left as written."""

from __future__ import annotations

import pytest

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
