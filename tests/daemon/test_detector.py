"""The repetition detector on a planted stream: real MiniLM, real HDBSCAN, real SQLite."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from stillroom.config import DetectorConfig
from stillroom.daemon.detector import (
    CandidateFound,
    find_candidates,
    infer_kind,
    main,
    observations_from_store,
    run_detection,
    save_candidates,
)
from stillroom.daemon.signatures import Observation, observe, prompt_signature
from stillroom.events import Event, FileFeatures, FilePayload, LLMCallPayload
from stillroom.prompts import prompt_shape
from stillroom.service.encoder import Encoder
from stillroom.store import Store

CONFIG = DetectorConfig()
DOWNLOADS = "a file arrived in ~/Downloads and the user moved it into a folder"
NOON = datetime(2025, 3, 3, 12, 0).timestamp()  # local noon: minutes later stay on that day

SENTIMENT = [
    "Classify the sentiment of this review as positive or negative:",
    "Is the following review positive or negative?",
    "Tell me whether this customer review is positive or negative.",
    "Read the review below and say if it is positive or negative.",
    "Sentiment of this product review (positive/negative):",
]
FIRST_NAMES = [
    "Extract the first names from this JSON list of people:",
    "List the first names of the people in this JSON:",
    "From the JSON below, give me each person's first name.",
    "Pull out the given names from this list of people (JSON):",
    "Which first names appear in this JSON array of people?",
]
SUMMARY = [
    "Summarise this support ticket in one sentence:",
    "Write a one-sentence summary of the following support ticket.",
    "Give me a single-sentence summary of this customer ticket:",
    "Condense this help-desk ticket into one sentence.",
    "In one sentence, what is this support ticket about?",
]
ONE_OFFS = [
    "Write a haiku about autumn",
    "Translate 'good morning' into Japanese",
    "What is the capital of Australia?",
    "Suggest a name for my new puppy",
    "Explain how a rainbow forms",
    "Give me a recipe for pancakes",
    "Write a limerick about a cat who loves jazz",
    "Who won the 2014 World Cup?",
    "Recommend three science fiction novels",
    "How do I convert Celsius to Fahrenheit?",
    "Draft a polite email declining a meeting invitation",
    "What rhymes with orange?",
    "List five fun facts about octopuses",
    "Explain the rules of chess briefly",
    "Plan a three-day trip to Lisbon",
]
GOOD = ["loved", "really enjoyed", "was delighted with", "would happily rebuy", "adore"]
BAD = ["hated", "was let down by", "regret buying", "returned", "cannot stand"]
ITEMS = ["the blender", "this jacket", "the headphones", "the tent", "this lamp", "the kettle"]
PEOPLE = [
    "Alice Smith",
    "Bruno Diaz",
    "Chen Wei",
    "Dana Okafor",
    "Elif Kaya",
    "Farid Haddad",
    "Greta Lind",
    "Hugo Martin",
    "Ines Costa",
    "Jonas Berg",
    "Keiko Ito",
    "Liam Walsh",
]
PROBLEMS = [
    (
        "my parcel came broken, please send a new one",
        "a damaged delivery and asks for a replacement",
    ),
    ("I was billed two times this month", "a duplicate charge and wants a refund"),
    ("the app logs me out every few minutes", "repeated logouts in the mobile app"),
    ("where is my package? tracking says nothing", "a missing shipment with no tracking updates"),
    ("please close my account and delete my data", "a request to delete the account and its data"),
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    model = Encoder()
    model.encode(["warm up"])  # loading starts tqdm's monitor thread: before any leak check
    return model


def at(day: int, minute: int) -> float:
    return NOON + day * 86400 + minute * 60


PDF = "application/pdf"
FILES = [  # name, MIME type, text snippet, where the user files it
    ("invoice-{i}.pdf", PDF, "INVOICE no. {i} Amount due EUR {i}.00", "Documents/Invoices"),
    ("IMG_{i}.jpg", "image/jpeg", None, "Pictures"),
    ("paper-{i}.pdf", PDF, "Abstract. We study model {i}, prove bounds.", "Documents/Papers"),
]


def download_moves(home: Path, days: int = 3, seed: int | None = None) -> list[Event]:
    """60 downloads filed by hand (with `seed`: filed at random, nothing to learn)."""
    rng = random.Random(seed)
    events = []
    for n in range(60):
        pattern, mime, snippet, folder = FILES[n % 3]
        folder = rng.choice(FILES)[3] if seed is not None else folder
        name = pattern.format(i=1000 + n)
        features = FileFeatures(
            name=name, extension=name.rsplit(".", 1)[1], mime=mime, size=40_000 + n,
            snippet=snippet.format(i=1000 + n) if snippet else None,
        )  # fmt: skip
        payload = FilePayload(
            path=str(home / folder / name), root=str(home / "Downloads"),
            src_path=str(home / "Downloads" / name), features=features,
        )  # fmt: skip
        events.append(Event(source="filesystem", kind="file.moved", payload=payload,
                            at=at(n % days, n), id=n + 1))  # fmt: skip
    return events


def moves(home: Path, days: int = 3, seed: int | None = None) -> list[Observation]:
    return [o for o in (observe(e, home) for e in download_moves(home, days, seed)) if o]


def prompt(instruction: str, text: str, outcome: str, when: float, event_id: int) -> Observation:
    message = f"{instruction}\n\n{text}" if text else instruction
    found = prompt_signature([{"role": "user", "content": message}])
    shape = prompt_shape([{"role": "user", "content": message}])
    assert found is not None and shape is not None and found == (shape.template, shape.user)
    return Observation(
        *found, outcome, when, event_id, "prompt", shape.instruction, shape.instruction_at, "gpt-x"
    )


def reviews(days: int = 3) -> list[Observation]:
    """30 reviews, half positive, asked about in five wordings; some answers shouted."""
    said = [(f"I {v} {item}.", "positive") for v in GOOD for item in ITEMS[:3]]
    said += [(f"I {v} {item}.", "negative") for v in BAD for item in ITEMS[:3]]
    return [
        prompt(SENTIMENT[n % 5], text, label.upper() if n % 7 == 0 else label,
               at(n % days, 200 + n), 1000 + n)
        for n, (text, label) in enumerate(said)
    ]  # fmt: skip


def one_offs(days: int = 3) -> list[Observation]:
    return [prompt(r, "", f"answer {n}", at(n % days, 500 + n), 4000 + n)
            for n, r in enumerate(ONE_OFFS)]  # fmt: skip


def prompt_stream(days: int = 3) -> list[Observation]:
    """Three paraphrased tasks (30 instances each) and 15 one-off requests."""
    out = reviews(days) + one_offs(days)
    pairs = list(itertools.combinations(PEOPLE, 2))[::2]
    for n in range(30):
        people = json.dumps([{"name": p, "age": 20 + n} for p in pairs[n]])
        names = ", ".join(p.split()[0] for p in pairs[n])
        out.append(prompt(FIRST_NAMES[n % 5], people, names, at(n % days, 300 + n), 2000 + n))
        problem, summary = PROBLEMS[n % 5]
        ticket = f"Hello, order {5000 + n}: {problem}. Thanks, customer {n}"
        said = f"Customer reports {summary} (order {5000 + n})."
        out.append(prompt(SUMMARY[n % 5], ticket, said, at(n % days, 400 + n), 3000 + n))
    return out


def templates_of(instructions: list[str]) -> set[str]:
    return {prompt(i, "x", "y", 0, 0).signature for i in instructions}


def by_templates(found: list[CandidateFound], instructions: list[str]) -> CandidateFound:
    wanted = templates_of(instructions)
    return next(c for c in found if wanted & set(c.templates))


def test_planted_tasks_and_only_they_become_candidates(tmp_path: Path, encoder: Encoder) -> None:
    found = find_candidates(moves(tmp_path) + prompt_stream(), encoder, CONFIG)
    assert len(found) == 4
    downloads = next(c for c in found if c.family == "file")
    assert downloads.signature == DOWNLOADS
    assert (downloads.kind, downloads.support, downloads.days) == ("classify", 60, 3)
    assert downloads.labels == {"Documents/Invoices": 20, "Pictures": 20, "Documents/Papers": 20}
    assert downloads.event_ids == list(range(1, 61))
    for instructions, kind in [
        (SENTIMENT, "classify"),
        (FIRST_NAMES, "extract"),
        (SUMMARY, "generate"),
    ]:
        cand = by_templates(found, instructions)
        assert set(cand.templates) == templates_of(instructions)  # every paraphrase, nothing else
        assert (cand.kind, cand.support, cand.days) == (kind, 30, 3)
        assert 0.0 <= cand.score <= 1.0
    sentiment = by_templates(found, SENTIMENT)
    assert sentiment.labels == {"positive": 15, "negative": 15}  # "POSITIVE" is the same label
    one_offs = templates_of(ONE_OFFS)
    assert not any(one_offs & set(c.templates) for c in found)

    detail = sentiment.detail()
    assert detail["cv_accuracy"] is not None and detail["cv_accuracy"] > 0.8
    assert len(detail["templates"]) == 5 and len(detail["event_ids"]) == 30


def test_one_day_of_repetition_is_not_a_task(tmp_path: Path, encoder: Encoder) -> None:
    stream = moves(tmp_path, days=1) + prompt_stream(days=1)
    assert find_candidates(stream, encoder, CONFIG) == []


def test_one_paraphrased_task_amid_one_offs_is_found(encoder: Encoder) -> None:
    (cand,) = find_candidates(reviews() + one_offs(), encoder, CONFIG)
    assert set(cand.templates) == templates_of(SENTIMENT)


def test_a_single_repeated_instruction_is_a_task(encoder: Encoder) -> None:
    said = [(f"I {GOOD[n % 5]} item {n}.", "positive" if n % 2 else "negative") for n in range(24)]
    stream = [
        prompt(SENTIMENT[0], text, label, at(n % 2, n), n) for n, (text, label) in enumerate(said)
    ]
    (cand,) = find_candidates(stream, encoder, CONFIG)
    assert cand.templates == {prompt(SENTIMENT[0], "x", "y", 0, 0).signature: 24}
    assert find_candidates(stream[:19], encoder, CONFIG) == []  # below min_support


def test_learnable_labels_score_above_random_ones(tmp_path: Path, encoder: Encoder) -> None:
    def candidate(seed: int | None) -> CandidateFound:
        (cand,) = find_candidates(moves(tmp_path, seed=seed), encoder, CONFIG)
        return cand

    learnable, random_labels = candidate(None), candidate(7)
    assert random_labels.kind == "classify"
    assert learnable.components["cv_accuracy"] == pytest.approx(1.0)
    assert learnable.score > 0.85
    assert learnable.score > random_labels.score + 0.3


def test_save_candidates_upserts_and_keeps_state(
    tmp_path: Path, store: Store, encoder: Encoder
) -> None:
    first = moves(tmp_path)
    ids = save_candidates(store, find_candidates(first, encoder, CONFIG))
    with store.transaction() as db:
        db.execute(
            "INSERT INTO tasks (id, name, kind, origin, spec, state, created, updated)"
            " VALUES (9, 'downloads', 'classify', 'detector', '{}', 'new', 0, 0)"
        )
        db.execute("UPDATE candidates SET state = 'queued', task_id = 9 WHERE id = ?", ids)

    later = [
        Observation(o.signature, o.input, o.outcome, o.at + 3 * 86400, None, o.family)
        for o in first[:12]
    ]
    assert save_candidates(store, find_candidates([*first, *later], encoder, CONFIG)) == ids
    (row,) = store.query("SELECT * FROM candidates")
    assert (row["state"], row["task_id"], row["support"], row["days"]) == ("queued", 9, 72, 6)
    assert row["signature"] == DOWNLOADS and row["first_at"] == at(0, 0)
    assert json.loads(row["detail"])["labels"]["Pictures"] == 24


def test_run_detection_reads_the_store_and_main_prints(
    tmp_path: Path, store: Store, encoder: Encoder, capsys: pytest.CaptureFixture[str]
) -> None:
    home = Path.home()
    store.add_events(download_moves(home))
    call = {
        "messages": [{"role": "user", "content": "Classify ticket #1: 'hello'"}],
        "response": "other",
        "model": "gpt-x",
    }
    store.add_event(
        Event(
            source="llm",
            kind="llm.call",
            payload=LLMCallPayload.model_validate(call),
            at=at(5, 0),
        )
    )
    observed = observations_from_store(store)
    assert len(observed) == 61 and observed[-1].family == "prompt"

    (cand,) = run_detection(store, CONFIG, encoder)
    assert cand.signature == DOWNLOADS and cand.kind == "classify"
    assert [r["signature"] for r in store.query("SELECT signature FROM candidates")] == [DOWNLOADS]

    assert main() == 0
    assert DOWNLOADS in capsys.readouterr().out


def test_a_prompt_candidate_records_its_template_and_instructions(encoder: Encoder) -> None:
    found = find_candidates(prompt_stream(), encoder, CONFIG)
    cand = by_templates(found, SENTIMENT)
    detail = cand.detail()
    assert detail["template"] == cand.signature and len(detail["template_hash"]) == 16
    assert detail["instruction_at"] == "user" and set(detail["instructions"]) == set(SENTIMENT)
    assert {t["signature"] for t in detail["templates"]} == templates_of(SENTIMENT)
    assert all(len(t["hash"]) == 16 for t in detail["templates"])
    assert detail["models"] == {"gpt-x": 30}


def test_json_answers_drawn_from_the_input_are_extraction() -> None:
    people = [
        f"{first} {last}" for first in ("Ada", "Alan", "Grace") for last in ("Hopper", "Turing")
    ]
    labelled = [
        (json.dumps({"people": [p]}), json.dumps({"first_name": p.split()[0]})) for p in people
    ]
    kind, drawn = infer_kind(labelled, Counter(out for _, out in labelled), CONFIG)
    assert (kind, drawn) == ("extract", 1.0)
    made_up = [
        (text, json.dumps({"mood": "calm"}) + str(n)) for n, (text, _) in enumerate(labelled)
    ]
    assert infer_kind(made_up, Counter(out for _, out in made_up), CONFIG)[0] == "generate"
