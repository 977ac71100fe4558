"""Teachers over real HTTP (tests/upstream.py): answers, token and cost accounting, retries,
timeouts, refusals; then labelling, synthesis and spend on top of them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from ticket_writer import writer_oracle
from upstream import Upstream, ticket_oracle

from stillroom.config import Config
from stillroom.config_gateway import _default_prices
from stillroom.errors import TeacherError
from stillroom.teachers import AnthropicTeacher, OpenAITeacher, teacher_from_config
from stillroom.teaching import (
    Labels,
    key,
    label_all,
    near_copy,
    parse_list,
    plan_teaching,
    synthesize,
    teach,
)

PRICES = _default_prices()
ROUTE = "Route this support ticket to billing, shipping, technical or other."
GIVEN = [
    "I was charged twice for my order this month",
    "Where is my parcel? It has been ten days",
    "The app shows an error every time I open settings",
    "Do you have this jacket in a larger size",
    "Please send me a refund for the broken lamp",
    "The courier never came and the tracking page is empty",
]
ASK = [{"role": "system", "content": ROUTE}, {"role": "user", "content": GIVEN[0]}]


@pytest.fixture
def up() -> Iterator[Upstream]:
    with Upstream(writer_oracle) as server:
        yield server


def openai_teacher(url: str, **kw: Any) -> OpenAITeacher:
    options: dict[str, Any] = {"api_key": "sk-test", "prices": PRICES, "backoff": 0.01} | kw
    return OpenAITeacher(base_url=url, model="gpt-4o-mini", **options)


def test_openai_teacher_answers_and_accounts(up: Upstream) -> None:
    with openai_teacher(up.url) as teacher:
        done = teacher.complete(ASK, max_tokens=8)
    assert done.text == "billing" and done.model == "gpt-4o-mini"
    words = len(ROUTE.split()) + len(GIVEN[0].split())  # the upstream counts words
    assert (done.input_tokens, done.output_tokens) == (words, 1)
    assert done.cost_usd == pytest.approx((words * 0.15 + 1 * 0.6) / 1e6)
    (request,) = up.received
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["messages"] == ASK
    assert request.body["max_tokens"] == 8 and request.body["temperature"] == 0


@pytest.mark.parametrize("suffix", ["", "/v1"])
def test_anthropic_teacher_sends_system_on_top(up: Upstream, suffix: str) -> None:
    with AnthropicTeacher(
        base_url=up.root + suffix,
        model="claude-3-5-haiku-20241022",
        api_key="sk-ant",
        prices=PRICES,
    ) as teacher:
        done = teacher.complete(ASK)
    assert done.text == "billing" and (done.input_tokens, done.output_tokens) == (10, 1)
    assert done.cost_usd == pytest.approx((10 * 0.8 + 1 * 4.0) / 1e6)  # priced by prefix
    (request,) = up.received
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant" and request.headers["anthropic-version"]
    assert request.body["system"] == ROUTE
    assert request.body["messages"] == [ASK[1]] and request.body["max_tokens"] > 0


def test_retries_429_and_500_then_succeeds(up: Upstream) -> None:
    waits: list[float] = []
    up.fail_next(429, "rate limited", **{"Retry-After": "7"})
    up.fail_next(500, "overloaded")
    with openai_teacher(up.url, sleep=waits.append, backoff=0.5) as teacher:
        assert teacher.complete(ASK).text == "billing"
    assert len(up.chat_calls()) == 3
    assert waits[0] == 7.0  # Retry-After wins over backoff
    assert 0.5 <= waits[1] <= 1.0  # second try: 0.5 * 2, jittered down to half at most


@pytest.mark.parametrize(
    ("status", "message"), [(400, "bad request: max_tokens"), (401, "Incorrect API key provided")]
)
def test_other_4xx_is_final_with_the_providers_message(
    up: Upstream, status: int, message: str
) -> None:
    up.fail_next(status, message)
    with openai_teacher(up.url) as teacher, pytest.raises(TeacherError) as caught:
        teacher.complete(ASK)
    assert len(up.received) == 1
    assert f"HTTP {status}: {message}" in str(caught.value) and "refused" in str(caught.value)


def test_gives_up_after_max_retries(up: Upstream) -> None:
    for _ in range(3):
        up.fail_next(503, "down for maintenance")
    with openai_teacher(up.url, max_retries=2) as teacher, pytest.raises(TeacherError) as caught:
        teacher.complete(ASK)
    assert len(up.received) == 3
    assert "gave up after 3 tries; last: HTTP 503: down for maintenance" in str(caught.value)


def test_timeout_is_retried_then_an_error() -> None:
    with (
        Upstream(ticket_oracle, answer_delay=1.0) as slow,
        openai_teacher(slow.url, timeout=0.2, max_retries=1) as teacher,
        pytest.raises(TeacherError) as caught,
    ):
        teacher.complete(ASK)
    assert len(slow.received) == 2
    assert "gave up after 2 tries; last: timed out after 0.2s" in str(caught.value)


def test_connection_refused_is_retried_then_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        openai_teacher(f"http://127.0.0.1:{port}/v1", max_retries=1) as teacher,
        pytest.raises(TeacherError, match="gave up after 2 tries; last: cannot connect"),
    ):
        teacher.complete(ASK)


def test_teacher_from_config_env_and_missing_keys() -> None:
    config = Config()
    env = {"STILLROOM_UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1"}
    with teacher_from_config(config, env) as local:  # local servers need no key
        assert isinstance(local, OpenAITeacher) and local.base_url == "http://127.0.0.1:9/v1"
        assert local.max_retries == 3 and local.model == "gpt-4o-mini"
    with pytest.raises(TeacherError, match="set STILLROOM_UPSTREAM_API_KEY"):
        teacher_from_config(config, {})
    claude = Config.from_data({"teacher": {"provider": "anthropic", "model": "claude-sonnet-4"}})
    with pytest.raises(TeacherError, match=r"anthropic\.com needs an API key: set ANTHROPIC_API"):
        teacher_from_config(claude, {})
    with teacher_from_config(claude, {"ANTHROPIC_API_KEY": "sk-ant"}) as remote:
        assert isinstance(remote, AnthropicTeacher) and remote.cost(10**6, 0) == 3.0


# -- labelling and synthesis --------------------------------------------------------------


def test_labels_given_inputs_and_keeps_the_first_spelling(up: Upstream) -> None:
    from stillroom.spend import Spend

    spend = Spend()
    with openai_teacher(up.url) as teacher:
        labels = label_all(teacher, ROUTE, "classify", GIVEN, Labels(), spend)
    assert labels == [ticket_oracle([{"role": "user", "content": g}]) for g in GIVEN]
    assert spend.calls == len(GIVEN) == len(up.chat_calls())
    sent = up.chat_calls()[0].body["messages"]
    assert sent[0]["role"] == "system" and ROUTE in sent[0]["content"]
    assert "label only" in sent[0]["content"]

    spellings = iter([" Billing.\n", "billing", "`BILLING`", "other "])
    with Upstream(lambda _: next(spellings)) as messy, openai_teacher(messy.url) as teacher:
        known = Labels()
        one_at_a_time = [
            label_all(teacher, ROUTE, "classify", [g], known, spend) for g in GIVEN[:4]
        ]
    assert [x for (x,) in one_at_a_time] == ["Billing", "Billing", "Billing", "other"]
    assert known.names() == ["Billing", "other"]


def test_synthesis_dedupes_and_reaches_the_count(up: Upstream) -> None:
    from stillroom.spend import Spend

    spend = Spend()
    with openai_teacher(up.url) as teacher:
        made = synthesize(teacher, ROUTE, GIVEN, 57, spend, labels=["billing", "other"])
    assert len(made.made) == 57
    keys = [key(t) for t in made.made]
    assert len(set(keys)) == 57 and not set(keys) & {key(g) for g in GIVEN}
    assert not any(near_copy(k, [key(g) for g in GIVEN]) for k in keys)
    prompts = [c.body["messages"][1]["content"] for c in up.chat_calls()]
    full = sum("Write 10 new inputs" in p for p in prompts[:-1])
    assert made.rejected >= 2 * full  # each full batch had a repeat and a near-copy
    assert len(prompts) == made.calls == spend.calls >= 6
    assert len({p.split("new inputs for this task. ")[1][:40] for p in prompts}) >= 5  # varied
    assert all(c.body["temperature"] > 0 for c in up.chat_calls())
    asked = [int(p.split("Write ")[1].split()[0]) for p in prompts]
    assert max(asked) == 10 and asked[-1] < 10  # batches of 10, then only what is missing


def test_parse_list_is_forgiving() -> None:
    assert parse_list('Sure!\n```json\n["a", {"input": "b"}, 3, ""]\n```') == ["a", "b"]
    assert parse_list("1. first one\n2) second one\n- third one\n") == [
        "first one",
        "second one",
        "third one",
    ]
    assert parse_list('[\n "complete",\n "cut off in the mid') == ["complete"]


def test_spend_estimated_before_and_reported_after(up: Upstream) -> None:
    with openai_teacher(up.url) as teacher:
        plan = plan_teaching(teacher, ROUTE, "classify", GIVEN, 30)
        assert (plan.label_calls, plan.synthesis_calls) == (36, 3)
        assert up.received == []  # estimating sends nothing
        taught = teach(teacher, ROUTE, "classify", GIVEN, 30, plan=plan, max_cost=1.0)
    spent = taught.spend
    asked = [c for c in up.chat_calls() if "JSON list" in c.body["messages"][1]["content"]]
    assert spent.calls == len(up.chat_calls()) == 6 + 30 + len(asked)
    assert taught.synthesized == 30 and taught.labelled == 6 and taught.rejected > 0
    assert spent.cost_usd is not None and plan.cost_usd is not None
    # chars/4 overestimates what the upstream counts (words): an upper estimate, same order.
    assert spent.cost_usd <= plan.cost_usd <= 4 * spent.cost_usd
    sources = [s for _, _, s in taught.rows]
    assert sources.count("teacher") == 6 and sources.count("synthetic") == 30
    assert "estimate: gpt-4o-mini, 36 labels and 3 synthesis requests" in plan.describe()
    assert taught.describe().startswith("teacher: labelled 6 given input(s), synthesized 30")
    with pytest.raises(TeacherError, match=r"above the limit of \$0\.0000; nothing was sent"):
        plan.check(0.00001)


def test_budget_stops_synthesis_early(up: Upstream) -> None:
    with openai_teacher(up.url) as teacher:
        plan = plan_teaching(teacher, ROUTE, "classify", GIVEN, 200)
        assert plan.cost_usd is not None
        cap = plan.cost_usd / 3
        taught = teach(teacher, ROUTE, "classify", GIVEN, 200, plan=plan, max_cost=cap)
    assert 0 < taught.synthesized < 200
    assert taught.spend.cost_usd is not None and taught.spend.cost_usd <= cap


def test_failure_midway_says_what_was_spent(up: Upstream) -> None:
    up.fail_next(401, "key revoked")
    with openai_teacher(up.url) as teacher, pytest.raises(TeacherError) as caught:
        teach(teacher, ROUTE, "classify", GIVEN, 10)
    assert "key revoked" in str(caught.value) and "spent before it stopped:" in str(caught.value)
