"""The local answerer on a real task: support-ticket calls detected, promoted and distilled
with the real MiniLM, answered through the real student worker child."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prompt_calls import SYSTEM, messages, mixed, record_calls, ticket, tickets
from prompt_calls import answer as answer_of
from upstream import MODEL

from stillroom.config import Config
from stillroom.daemon.candidates import promote_candidates
from stillroom.daemon.detector import run_detection
from stillroom.daemon.notify import Notice
from stillroom.daemon.proposals import answer, review
from stillroom.events import Event, LLMCallPayload
from stillroom.paths import Paths
from stillroom.predictions import live_stats, record
from stillroom.prompts import prompt_shape
from stillroom.registry import ModelVersion, Registry, Task, input_hash, split_of
from stillroom.savings import ledger
from stillroom.service.classifier import ClassifierStudent
from stillroom.service.encoder import Encoder
from stillroom.service.engine import Engine
from stillroom.service.gateway.answerer import Decision
from stillroom.service.local import TaskAnswerer
from stillroom.service.students import StudentClient
from stillroom.store import Store
from stillroom.trainers.dataset import stored_split
from stillroom.trainers.distill import distill_classifier, score_as_served

LABELS = {"Billing.", "Shipping.", "Technical.", "Other."}


@dataclass
class Trained:
    store: Store
    students: StudentClient
    task: Task
    version: ModelVersion

    def answerer(self, audit_share: float = 0.0, **kw: Any) -> TaskAnswerer:
        config = Config.from_data({"gateway": {"audit_share": audit_share}})
        return TaskAnswerer(self.store, self.students, config, rng=random.Random(7), **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """300 recorded calls (every tenth ticket about two teams, every fifth asked through the
    system message) -> detection -> a prompt task -> a distilled student. Once per module:
    the worker child starts here, on this home, and serves every test."""
    env = pytest.MonkeyPatch()
    env.setenv("STILLROOM_HOME", str(tmp_path_factory.mktemp("local") / "home"))
    store = Store(Paths.resolve().ensure().database)
    students = StudentClient()
    try:
        record_calls(store, tickets(300, seed=1, mixed_every=10), system_every=5)
        config = Config.from_data({"detector": {"min_days": 1}})
        run_detection(store, config)
        (task,) = promote_candidates(store, config)
        result = distill_classifier(Registry(store), task, Encoder(store=store), Paths.resolve())
        assert result.passed, result.guarantee
        students.embed(["start the worker now, on this home"])
        yield Trained(store, students, Registry(store).task(task.name), result.version)
    finally:
        students.close()
        store.close()
        env.undo()


@pytest.fixture
def loop(trained: Trained) -> Trained:
    """The task accepted (its version active), with no live record yet."""
    registry = Registry(trained.store)
    with trained.store.transaction() as db:
        db.execute("DELETE FROM predictions")
        db.execute("DELETE FROM proposals")
    registry.set_status(trained.version.id, "active")
    registry.update_task(trained.task, state="active")
    trained.store.paused = False
    return trained


def body(text: str, paraphrase: int = 0, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": messages(text, paraphrase), **extra}


def fresh_tickets(count: int, seed: int = 50) -> list[str]:
    rng = random.Random(seed)
    return [ticket(rng) for _ in range(count)]


def test_the_task_spec_says_how_to_match_and_answer(loop: Trained) -> None:
    spec = loop.task.spec
    assert spec["family"] == "prompt" and spec["models"] == [MODEL]
    assert spec["labels"] == {k.rstrip(".").lower(): k for k in LABELS}
    assert len(spec["templates"]) == 5 and spec["template_hash"] in spec["templates"]
    assert SYSTEM in spec["instructions"]
    examples = Registry(loop.store).examples(loop.task)
    assert {e.output for e in examples} == {"billing", "shipping", "technical", "other"}
    assert all(e.source == "teacher" and "support ticket" not in e.input for e in examples)


def test_the_worker_answers_calibration_inputs_as_calibration_scored_them(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calibrated as served: for every calibration input the worker's confidence, distance
    and label are those distillation's scoring gives, and the version's threshold and radius
    applied to them answer (and err on) exactly as many inputs as its guarantee counted."""
    registry = Registry(trained.store)
    version = registry.version(trained.version.id)
    known = [e for e in registry.examples(trained.task) if e.at <= version.created]
    items = stored_split(known).calibration  # as distilled (settled calls add examples)
    guarantee = version.guarantee
    assert guarantee["calibration_size"] == len(items) and guarantee["threshold"] is not None
    monkeypatch.setenv("STILLROOM_HOME", str(trained.store.path.parent.parent))
    engine = Engine(Paths.resolve())  # the fixture's home: its encoder GGUF is there already
    try:
        scored = score_as_served(ClassifierStudent(version), items, trained.store, engine)
    finally:
        engine.close()
    texts = [i.input for i in items]
    served = trained.students.predict(version.id, texts)
    assert [a.best for a in served] == scored.scores.best
    assert [a.confidence for a in served] == pytest.approx(scored.scores.confidence, abs=1e-6)
    assert [a.distance for a in served] == pytest.approx(scored.scores.distance, abs=1e-6)
    answered = [(a.answer, i.output) for a, i in zip(served, items, strict=True) if a.answer]
    assert len(answered) == guarantee["answered"] > 0
    assert sum(said != truth for said, truth in answered) == guarantee["errors"]
    # Asked one at a time, as the gateway asks: an answer does not depend on what was asked
    # beside it (llama.cpp embeds each text in a call of its own; numpy's products may still
    # round the last float32 bit by the batch's shape).
    for n in range(0, len(texts), max(1, len(texts) // 8)):
        (alone,) = trained.students.predict(version.id, [texts[n]])
        assert alone.confidence == pytest.approx(served[n].confidence, abs=1e-6)
        assert alone.distance == pytest.approx(served[n].distance, abs=1e-6)


def test_a_call_with_a_learned_template_is_answered_as_the_teacher_writes(loop: Trained) -> None:
    answerer = loop.answerer()
    said = [(n, text, answerer.decide(body(text, n))) for n, text in enumerate(fresh_tickets(16))]
    answered = [(n, text, d) for n, text, d in said if d.reply is not None]
    assert len(answered) >= 8, [d.reason for _, _, d in said]
    assert all(d.reason == "unsure" for _, _, d in said if d.reply is None)
    for n, text, decision in answered:
        assert decision.reply is not None
        assert decision.reply.text == answer_of(messages(text, n))
        assert (decision.task, decision.reason, decision.audit) == (
            loop.task.name,
            "confident",
            None,
        )
        assert decision.reply.version == loop.version.version
    system = answerer.decide(
        {"model": MODEL, "messages": messages("My parcel never arrived.", 0, system=True)}
    )
    assert system.reply is not None and system.reply.text == "Shipping."
    stats = live_stats(loop.store, loop.version.id, "active")
    assert (stats.answered, stats.judged) == (len(answered) + 1, 0)


def test_a_close_paraphrase_matches_by_embedding_and_another_task_does_not(loop: Trained) -> None:
    answerer = loop.answerer()
    said = "Which team should handle this ticket?\n\nThe parcel with my order never arrived."
    shape = prompt_shape([{"role": "user", "content": said}])
    assert shape is not None and shape.template_hash not in loop.task.spec["templates"]
    decision = answerer.decide({"model": MODEL, "messages": [{"role": "user", "content": said}]})
    assert decision.reply is not None and decision.reply.text == "Shipping."
    for other in ("Summarise this support ticket:", "Translate this ticket into French:"):
        asked = {"role": "user", "content": f"{other}\n\nThe parcel with my order never arrived."}
        assert answerer.decide({"model": MODEL, "messages": [asked]}) == Decision(reason="no task")


IMAGE = [{"type": "text", "text": "Which team should handle this support ticket?\n\nSee photo."},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"tools": [{"type": "function", "function": {"name": "route"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tools"),
        ({"functions": [{"name": "route"}]}, "tools"),
        ({"n": 2}, "n > 1"),
        ({"response_format": {"type": "json_object"}}, "response_format json_object"),
        ({"response_format": {"type": "json_schema"}}, "response_format json_schema"),
        ({"logprobs": True}, "logprobs"),
        ({"model": "gpt-other"}, "model gpt-other not learned"),
    ],
)
def test_calls_the_student_cannot_honour_are_forwarded(
    loop: Trained, extra: dict[str, Any], reason: str
) -> None:
    decision = loop.answerer().decide(body("I was charged twice for my order.", **extra))
    assert decision == Decision(task=loop.task.name, reason=reason)


def test_non_text_parts_tool_turns_and_conversations_are_forwarded(loop: Trained) -> None:
    answerer = loop.answerer()
    said = body("I was charged twice for my order.")
    cases = [
        ([{"role": "user", "content": IMAGE}], "non-text content"),
        ([*said["messages"], {"role": "assistant", "content": "Billing."},
          {"role": "user", "content": said["messages"][0]["content"]}], "conversation"),
        ([*said["messages"], {"role": "assistant", "tool_calls": [{"id": "1"}]},
          {"role": "tool", "tool_call_id": "1", "content": "ok"}, *said["messages"]], "tools"),
    ]  # fmt: skip
    for sent, reason in cases:
        decision = answerer.decide({"model": MODEL, "messages": sent})
        assert decision == Decision(task=loop.task.name, reason=reason)
    streamed = answerer.decide({**said, "stream": True, "temperature": 0})
    assert streamed.reply is not None and streamed.reply.text == "Billing."


def test_no_task_unsure_and_out_of_scope_calls_are_forwarded(loop: Trained) -> None:
    answerer = loop.answerer()
    haiku = {"model": MODEL, "messages": [{"role": "user", "content": "Write a haiku about tea"}]}
    assert answerer.decide(haiku) == Decision(reason="no task")
    assert answerer.decide({"model": MODEL, "messages": "hi"}) == Decision(reason="no task")
    far = answerer.decide(body("Preheat the oven to 200 degrees and bake the bread for an hour."))
    assert (far.reply, far.audit, far.reason) == (None, None, "out of scope")
    rng = random.Random(99)
    decisions = [(t, answerer.decide(body(t))) for t in (mixed(rng) for _ in range(12))]
    unsure = [(t, d) for t, d in decisions if d.reason == "unsure"]
    assert unsure and all(d.reply is None and d.audit is None for _, d in unsure)
    text, decision = unsure[0]
    answerer.settle(decision, "Billing", 420.0)  # the provider's answer becomes its truth
    rows = loop.store.query("SELECT input, abstained, truth FROM predictions WHERE abstained = 1")
    assert [tuple(r) for r in rows] == [(text, 1, "billing")]
    # The provider's answer is one more example, but a call the student was unsure of is
    # harder than the task's traffic: it trains, never calibrates.
    assert decision.abstained
    kept = [e for e in Registry(loop.store).examples(loop.task) if e.input == text]
    assert [(e.output, e.source, e.split) for e in kept] == [("billing", "teacher", "train")]


def test_audits_are_drawn_before_the_student_speaks(loop: Trained) -> None:
    """Audited calls are a uniform sample of the task's calls, sure or not: their answers
    are kept as examples where their input's hash puts them, so they may calibrate."""
    answerer = loop.answerer(audit_share=1.0)
    rng = random.Random(98)
    said = [(t, answerer.decide(body(t))) for t in (mixed(rng) for _ in range(40))]
    assert all(d.reason == "audit" and not d.abstained for _, d in said)
    unsure = [(t, d) for t, d in said if d.audit is None]  # it would have abstained
    assert unsure, "no mixed ticket left the student unsure"
    registry = Registry(loop.store)
    for _, decision in said:
        answerer.settle(decision, "Shipping", 500.0)
    split = {e.input: e.split for e in registry.examples(loop.task)}
    for text, _ in said:
        assert split[text] == split_of(input_hash(text)), text
    assert {split[t] for t, _ in said} != {"train"}


def test_a_share_of_confident_calls_is_audited(loop: Trained) -> None:
    texts = fresh_tickets(60, seed=3)
    answerer = loop.answerer(audit_share=0.3)
    decisions = [answerer.decide(body(t, n)) for n, t in enumerate(texts)]
    audits = [d for d in decisions if d.audit is not None]
    confident = [d for d in decisions if d.reason in ("audit", "confident")]
    assert 0.15 * len(confident) <= len(audits) <= 0.45 * len(confident)
    assert all(d.reply is None and d.reason == "audit" for d in audits)
    for decision in audits:
        assert decision.audit is not None
        answerer.settle(decision, decision.audit.text, 800.0)  # the model agrees
    stats = live_stats(loop.store, loop.version.id, "audit")
    assert (stats.judged, stats.errors) == (len(audits), 0)
    drawn = [loop.answerer(audit_share=1.0).decide(body(t)) for t in texts[:5]]
    assert all(d.reason == "audit" and d.reply is None for d in drawn)
    assert not any(loop.answerer(audit_share=0.0).decide(body(t)).audit for t in texts[:5])


def test_audit_disagreements_pause_the_task(loop: Trained) -> None:
    paused: list[tuple[str, str]] = []
    answerer = loop.answerer(audit_share=1.0, on_pause=lambda *said: paused.append(said))
    texts = fresh_tickets(3, seed=4)
    first = answerer.decide(body(texts[0]))
    assert first.audit is not None
    answerer.settle(first, "I am not sure which team.", 900.0)
    stats = live_stats(loop.store, loop.version.id, "audit")
    assert (stats.judged, stats.errors) == (1, 1)
    # One error in one audit is already beyond a bound of a few percent (p < 0.05).
    assert Registry(loop.store).task(loop.task.name).state == "paused"
    assert paused and paused[0][0] == loop.task.name and "disagreed" in paused[0][1]
    assert answerer.decide(body(texts[1])) == Decision(task=loop.task.name, reason="paused")


def test_stillroom_pause_stops_local_answers(loop: Trained) -> None:
    loop.store.paused = True
    decision = loop.answerer().decide(body("I was charged twice for my order."))
    assert decision == Decision(task=loop.task.name, reason="paused")


class Notices:
    name = "test"

    def __init__(self) -> None:
        self.seen: list[Notice] = []

    def notify(self, notice: Notice) -> None:
        self.seen.append(notice)


def test_a_shadow_never_answers_and_earns_a_proposal(loop: Trained) -> None:
    registry = Registry(loop.store)
    registry.set_status(loop.version.id, "shadow")
    registry.update_task(loop.task, state="ready")
    answerer = loop.answerer(audit_share=1.0)
    for n, text in enumerate(fresh_tickets(40, seed=5)):
        decision = answerer.decide(body(text, n))
        assert decision == Decision(task=loop.task.name, reason="shadow")
        answerer.settle(decision, text.split()[0], 700.0)  # not a team: every one disagrees
        answerer.settle(decision, "Billing", 700.0)  # settled once only
    stats = live_stats(loop.store, loop.version.id, "shadow")
    assert (stats.answered + stats.abstained, stats.judged) == (40, stats.answered)
    assert stats.errors == stats.judged
    with loop.store.transaction() as db:  # the model agreed after all
        db.execute("UPDATE predictions SET truth = answer WHERE mode = 'shadow'")
    notices = Notices()
    (proposal,) = review(loop.store, notices)
    assert proposal.text.startswith(f"I can answer {loop.task.name} calls: 100% agreement")
    assert f"the model's last {stats.judged} answers" in proposal.text
    answer(loop.store, proposal.id, "accept")
    answerer.refresh()
    confident = loop.answerer().decide(body("I was charged twice for my order."))
    assert confident.reply is not None and confident.reply.text == "Billing."


def call(task: str | None, by: str, latency: float, **kw: Any) -> Event:
    payload = LLMCallPayload(
        model=kw.pop("model", MODEL),
        messages=[{"role": "user", "content": "x"}],
        answered_by=by,  # type: ignore[arg-type]
        task=task,
        latency_ms=latency,
        **kw,
    )
    return Event(source="llm", kind="llm.call", payload=payload)


def test_the_savings_ledger(store: Store) -> None:
    registry = Registry(store)
    task = registry.create_task(
        "route", "classify", origin="detector", spec={"models": [MODEL], "labels": {}}
    )
    version = registry.add_version(
        task, 1, student="s", path="/m", metrics={}, guarantee={}, status="active"
    )
    events = [call("route", "local", ms, prompt_tokens=1000) for ms in (3.0, 5.0, 4.0)]
    events += [call("route", "upstream", ms, status=200, completion_tokens=10) for ms in (300, 500)]
    events += [call("route", "audit", 700.0, status=200, completion_tokens=30)]
    events += [call(None, "upstream", 1.0), call("other", "local", 2.0, model="unpriced")]
    store.add_events(events)
    for said, truth in [("billing", "billing"), ("billing", "shipping")]:
        record(store, version.id, "audit", "t", said, 0.9, False, None, truth=truth)
    prices = Config.from_data({"gateway": {"prices": {MODEL: {"input": 1.0, "output": 2.0}}}})
    other, route = ledger(store, prices.gateway.prices)
    assert (route.task, route.local, route.forwarded, route.audited) == ("route", 3, 3, 1)
    assert route.disagreements == 1
    assert (route.local_p50_ms, route.forwarded_p50_ms) == (4.0, 500.0)
    # Each local answer: 1000 prompt tokens at $1/M and the typical 10-token answer at $2/M.
    assert route.saved_usd == pytest.approx(3 * (1000 * 1.0 + 10 * 2.0) / 1e6)
    assert (other.task, other.local, other.saved_usd) == ("other", 1, None)
