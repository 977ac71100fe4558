"""Signatures: masking variable parts, splitting instructions, observing events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stillroom.daemon.signatures import mask, observe, prompt_signature, split_instruction
from stillroom.events import Event, FileFeatures, FilePayload, GenericPayload, LLMCallPayload
from stillroom.prompts import PromptShape, label_key, prompt_shape, template_hash
from stillroom.store import Store


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "order 4521 costs $12.50, 45% off, -3 and 1,000,000",
            "order <num> costs $<num>, <num> off, <num> and <num>",
        ),
        ("keep MP3 and v2 and gpt4 as words", "keep MP3 and v2 and gpt4 as words"),
        (
            "due 2024-03-05, 3/5/2024, 05.03.24, March 5, 2024 and 5 Mar",
            "due <date>, <date>, <date>, <date> and <date>",
        ),
        ("at 2024-03-05T10:30:00Z or at 10:30 pm or 09:15:02", "at <date> or at <time> or <time>"),
        (
            "see /home/bob/a.txt, ~/Downloads/x.pdf, ./run.sh, C:\\Users\\x.doc, report.pdf",
            "see <path>, <path>, <path>, <path>, <path>",
        ),
        ("and/or stays; so does 1/2", "and/or stays; so does <num>/<num>"),
        (
            "open https://example.com/a?b=1. or www.foo.org, (https://x.io/p)",
            "open <url>. or <url>, (<url>)",
        ),
        ("mail bob.smith+x@mail.example.co.uk now", "mail <email> now"),
        (
            "say 'hi there' and \"bye\" and `ls -la` and \u201csmart\u201d",
            "say <quoted> and <quoted> and <quoted> and <quoted>",
        ),
        ("don't mask it's but mask 'it's mine'", "don't mask it's but mask <quoted>"),
        (
            'parse {"people": [{"name": "Alice Smith"}, {"name": "Bob Jones"}]} now',
            "parse <json> now",
        ),
        ("short lists stay [1, 2]", "short lists stay [<num>, <num>]"),
        ("run:\n```python\nprint(1)\n```\nthen stop", "run: <code> then stop"),
        ("ids 3f2a9c0d1e4b5a6c and 123e4567-e89b-12d3-a456-426614174000", "ids <id> and <id>"),
    ],
)
def test_mask_replaces_variable_parts(text: str, masked: str) -> None:
    assert mask(text) == masked
    assert mask(masked) == masked  # placeholders survive a second pass


def test_tickets_mask_to_one_template() -> None:
    one = mask("Classify ticket #4521: 'my card was charged twice'")
    two = mask("Classify ticket #77: 'cannot log in'")
    assert one == two == "Classify ticket #<num>: <quoted>"


def test_nested_json_block_with_escaped_quotes() -> None:
    text = 'Extract: [{"name": "A \\"Al\\" Smith", "tags": ["x]", "y"]}, {"name": "Bo"}] done'
    assert mask(text) == "Extract: <json> done"


@pytest.mark.parametrize(
    ("message", "instruction", "variable"),
    [
        ("Classify the sentiment:\n\nGreat food.", "Classify the sentiment:", "Great food."),
        (
            "Great food, would come again.\n\nIs the review above positive?",
            "Is the review above positive?",
            "Great food, would come again.",
        ),
        (
            "Summarise this ticket.\nMy order never came.",
            "Summarise this ticket.",
            "My order never came.",
        ),
        (
            "Classify ticket #4521: 'my card was charged twice'",
            "Classify ticket #4521:",
            "'my card was charged twice'",
        ),
        (
            "Is this review positive or negative? I loved it.",
            "Is this review positive or negative?",
            "I loved it.",
        ),
        (
            "Which intent is this? Answer with the intent only.\n\nWhere is my new card?",
            "Which intent is this? Answer with the intent only.",
            "Where is my new card?",
        ),
        (
            "I paid twice.\n\nWhat team should handle the ticket above?",
            "What team should handle the ticket above?",
            "I paid twice.",
        ),
        ("Write a haiku about autumn", "Write a haiku about autumn", None),
        ("Note: be brief", "Note: be brief", None),
    ],
)
def test_split_instruction(message: str, instruction: str, variable: str | None) -> None:
    assert split_instruction(message) == (instruction, variable)


def test_prompt_signature_masks_the_input_and_keeps_the_system_message() -> None:
    def messages(ticket: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": "You triage tickets for ACME (since 2019)."},
            {"role": "user", "content": f"Which team should handle this ticket?\n\n{ticket}"},
        ]

    one = prompt_signature(messages("My card was charged twice on 2024-03-01."))
    two = prompt_signature(messages("Cannot log in since the update."))
    assert one is not None and two is not None
    assert (
        one[0]
        == two[0]
        == (
            "You triage tickets for ACME (since <num>).\n"
            "Which team should handle this ticket? <input>"
        )
    )
    assert one[1].endswith("My card was charged twice on 2024-03-01.")
    assert prompt_signature([{"role": "system", "content": "hi"}]) is None


def _move(src: Path, dst: Path, **kw: Any) -> Event:
    payload = FilePayload(path=str(dst), root=str(src.parent), src_path=str(src), **kw)
    return Event(source="filesystem", kind="file.moved", payload=payload, at=1000.0, id=5)


def test_observe_a_user_filing_a_download(tmp_path: Path) -> None:
    home = tmp_path
    src, dst = home / "Downloads" / "inv-7.pdf", home / "Documents" / "Invoices" / "inv-7.pdf"
    features = FileFeatures(
        name="inv-7.pdf", extension="pdf", mime="application/pdf", size=2048, snippet="INVOICE 7"
    )
    obs = observe(_move(src, dst, features=features), home)
    assert obs is not None
    assert obs.signature == "a file arrived in ~/Downloads and the user moved it into a folder"
    assert (
        obs.input == "name: inv-7.pdf\ntype: application/pdf (.pdf)\nsize: 2.0 KB\ntext: INVOICE 7"
    )
    assert (obs.outcome, obs.at, obs.event_id, obs.family) == (
        "Documents/Invoices",
        1000.0,
        5,
        "file",
    )

    bare = observe(_move(src, dst), home)
    assert bare is not None and bare.input == "name: inv-7.pdf\ntype: .pdf"


def test_observe_ignores_what_is_not_the_user_filing(tmp_path: Path) -> None:
    home = tmp_path
    src = home / "Downloads" / "a.txt"
    assert observe(_move(src, home / "Documents" / "a.txt", by_stillroom=True), home) is None
    assert observe(_move(src, home / "Downloads" / "sub" / "a.txt"), home) is None
    created = Event(
        source="filesystem",
        kind="file.created",
        payload=FilePayload(path=str(src), root=str(src.parent)),
    )
    assert observe(created, home) is None


def test_observe_a_folder_outside_home_keeps_its_absolute_path(tmp_path: Path) -> None:
    src, dst = Path("/srv/inbox/a.txt"), Path("/srv/done/a.txt")
    obs = observe(_move(src, dst), tmp_path)
    assert obs is not None
    assert obs.signature == "a file arrived in /srv/inbox and the user moved it into a folder"
    assert obs.outcome == "/srv/done"


def test_observe_an_llm_call_as_stored(store: Store) -> None:
    data = {
        "messages": [{"role": "user", "content": "Classify ticket #4521: 'charged twice'"}],
        "response": {"choices": [{"message": {"role": "assistant", "content": "billing"}}]},
        "model": "gpt-x",
    }
    event_id = store.add_event(
        Event(source="llm", kind="llm.call", payload=LLMCallPayload.model_validate(data))
    )
    stored = store.event(event_id)
    assert stored is not None
    obs = observe(stored)
    assert obs is not None
    assert obs.signature == "Classify ticket #<num>: <input>"
    assert (obs.input, obs.outcome, obs.family, obs.event_id) == (
        "Classify ticket #4521: 'charged twice'",
        "billing",
        "prompt",
        event_id,
    )
    empty = Event(source="llm", kind="llm.call", payload=LLMCallPayload(model="x", messages=[]))
    assert observe(empty) is None
    legacy = Event(source="llm", kind="llm.call", payload=GenericPayload(data=data))
    assert observe(legacy) is not None  # a payload kept as stored still reads


def test_prompt_shape_says_where_the_instruction_sits() -> None:
    in_user = prompt_shape([{"role": "user", "content": "Classify the sentiment:\n\nGreat food."}])
    assert in_user == PromptShape(
        "Classify the sentiment: <input>",
        "Great food.",
        "Classify the sentiment:",
        "user",
        "Classify the sentiment:\n\nGreat food.",
    )
    system = "Route each ticket to a team (billing, shipping, other)."
    in_system = prompt_shape(
        [{"role": "system", "content": system}, {"role": "user", "content": "Parcel is late!"}]
    )
    assert in_system is not None
    assert (in_system.template, in_system.input) == (f"{system}\n<input>", "Parcel is late!")
    assert (in_system.instruction, in_system.instruction_at) == (system, "system")
    assert in_system.template_hash == template_hash(in_system.template)
    assert len(in_system.template_hash) == 16
    parts = [{"type": "text", "text": "Late again"}, {"type": "image_url", "image_url": {}}]
    shown = prompt_shape(
        [{"role": "system", "content": system}, {"role": "user", "content": parts}]
    )
    assert shown is not None and shown.input == "Late again"


def test_labels_differing_in_case_spacing_or_stops_are_one() -> None:
    assert label_key("  Billing.\n") == label_key("billing") == label_key("'BILLING'!") == "billing"
    assert label_key("Two  words") == "two words"


def test_a_local_answer_is_not_observed() -> None:
    """The detector learns from the teacher, never from a student's own answers."""
    said = [{"role": "user", "content": "Classify ticket #1: 'charged twice'"}]
    for by, seen in [("local", False), ("audit", True), ("upstream", True)]:
        payload = LLMCallPayload(model="x", messages=said, response="billing", answered_by=by)  # type: ignore[arg-type]
        event = Event(source="llm", kind="llm.call", payload=payload)
        assert (observe(event) is not None) is seen
