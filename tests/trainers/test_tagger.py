"""The CRF tagger for extraction that only copies: alignment of teacher outputs to the input's
pieces, exact probabilities, learning from a few dozen examples, files."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from stillroom.errors import ModelError
from stillroom.service.generation import pieces
from stillroom.service.judge import exact, json_schema
from stillroom.service.tagger import LIST, OUTSIDE, Tagger, start_mask, transition_mask, write
from stillroom.trainers.spans import align, fields_of
from stillroom.trainers.tagger import train_tagger

STREETS = ["Court", "Main", "Elm", "Martin Luther King", "Oak Hill", "5th", "Lake Shore"]
TYPES = ["Street", "St.", "Ave", "Road", "Blvd"]
CITIES = ["Brooklyn", "Chicago", "San Jose", "Saint Paul", "Memphis", "Reno"]
STATES = ["NY", "IL", "CA", "MN", "TN", "NV"]


def address(rng: random.Random) -> tuple[str, str]:
    """An address line and the fields a copying teacher writes for it (commas left out)."""
    fields = {
        "number": str(rng.randint(1, 9999)),
        "street": rng.choice(STREETS),
        "type": rng.choice(TYPES),
    }
    text = f"{fields['number']} {fields['street']} {fields['type']}"
    if rng.random() < 0.5:
        fields["unit"] = f"{rng.choice(['Apt', 'Suite', '#'])} {rng.randint(1, 40)}"
        text += f", {fields['unit']}"
    fields |= {"city": rng.choice(CITIES), "state": rng.choice(STATES)}
    fields["zip"] = str(rng.randint(10000, 99999))
    text += f"{rng.choice([', ', ' ', chr(10)])}{fields['city']}, {fields['state']} {fields['zip']}"
    return text, json.dumps(fields)


ADDRESS_FIELDS = {k: False for k in ("number", "street", "type", "unit", "city", "state", "zip")}


def test_fields_of_takes_flat_string_shapes_only() -> None:
    assert fields_of(json_schema(['{"a": "x", "b": ["y"]}'])) == {"a": False, "b": True}
    assert fields_of(json_schema(['["x", "y"]'])) == {LIST: True}
    assert fields_of(json_schema(['{"a": {"b": "x"}}'])) is None
    assert fields_of(json_schema(['{"a": 3}'])) is None
    assert fields_of(json_schema(['[{"a": "x"}]'])) is None
    assert fields_of(None) is None


def test_align_labels_the_pieces_that_write_the_output_back() -> None:
    text = "65 Court Street, Room 1201, Brooklyn, NY 11201."
    out = {"number": "65", "street": "Court Street", "city": "Brooklyn", "zip": "11201."}
    fields = {k: False for k in out}
    labels = align(text, json.dumps(out), fields)
    assert labels is not None
    got = {p.text: label for p, label in zip(pieces(text), labels, strict=True)}
    assert got["Court"] == "B-street" and got["Street"] == "I-street"
    assert got[","] == OUTSIDE and got["Room"] == OUTSIDE  # what the teacher left out
    assert labels[-2:] == ["B-zip", "I-zip"]  # "11201" and its "."
    assert json.loads(write(text, labels, fields)) == out
    # Runs joined by a space; any whitespace in the input reads as one space.
    two_runs = align("Front St.,\nMemphis TN", '{"s": "St. TN"}', {"s": False})
    assert two_runs == [OUTSIDE, "B-s", "I-s", OUTSIDE, OUTSIDE, "B-s"]


def test_align_gives_each_list_item_its_own_run() -> None:
    people = json.dumps([{"name": "Ada Berg"}, {"name": "Bo Ek"}, {"name": "Ada Ek"}])
    labels = align(people, '["Ada", "Bo", "Ada"]', {LIST: True})
    assert labels is not None and labels.count(f"B-{LIST}") == 3
    assert json.loads(write(people, labels, {LIST: True})) == ["Ada", "Bo", "Ada"]
    # Adjacent items stay apart: each starts its own run.
    assert json.loads(write("Ann Bob", [f"B-{LIST}", f"B-{LIST}"], {LIST: True})) == [
        "Ann",
        "Bob",
    ]


@pytest.mark.parametrize(
    ("text", "output"),
    [
        ("Kansas City, MO", '{"s": "Missouri"}'),  # rewritten
        ("Chicago, IL", '{"s": "Chic"}'),  # half a word
        ("Ada Berg and Bo", '["Ada Bo"]'),  # one item must be one run
        ("Ada", '{"other": "Ada"}'),  # a field it does not write
        ("Ada", "Ada"),  # not JSON
    ],
)
def test_align_refuses_what_it_cannot_write(text: str, output: str) -> None:
    fields = {LIST: True} if output.startswith("[") else {"s": False}
    assert align(text, output, fields) is None


def _score(tagger: Tagger, text: str, path: tuple[int, ...]) -> float:
    e = tagger._emission(pieces(text))
    t = tagger.transitions + transition_mask(tagger.labels)
    s = tagger.start + start_mask(tagger.labels)
    total = s[path[0]] + e[0, path[0]] + tagger.end[path[-1]]
    for i in range(1, len(path)):
        total += t[path[i - 1], path[i]] + e[i, path[i]]
    return float(total)


def test_viterbi_and_probability_match_brute_force() -> None:
    rng = random.Random(1)
    pairs = []
    for _ in range(30):
        name = rng.choice(["Ada", "Bo", "Cy"])
        pairs.append((f"to {name} at {rng.randint(1, 9)}", json.dumps({"who": name})))
    tagger = train_tagger(pairs, {"who": False})
    for text in ["to Bo at 3", "Cy at 9 to", "to to Ada"]:
        n, labels = len(pieces(text)), tagger.labels
        scores = {
            path: _score(tagger, text, path)
            for path in itertools.product(range(len(labels)), repeat=n)
        }
        best = max(scores, key=scores.__getitem__)
        log_z = np.log(np.sum(np.exp(np.array(list(scores.values())))))
        got, probability = tagger.tag(text)
        assert got == [labels[k] for k in best]
        assert probability == pytest.approx(np.exp(scores[best] - log_z), rel=1e-6)
        assert 0 < probability <= 1


def test_it_learns_to_copy_fields_from_a_few_dozen_examples(tmp_path: Path) -> None:
    rng = random.Random(0)
    train = [address(rng) for _ in range(80)]
    test = [address(rng) for _ in range(60)]
    tagger = train_tagger(train, ADDRESS_FIELDS)
    assert tagger.iterations > 1
    answers = [tagger.answer(text) for text, _ in test]
    right = [exact(a, want) for (a, _), (_, want) in zip(answers, test, strict=True)]
    assert sum(right) >= 0.9 * len(test), [
        a for a, ok in zip(answers, right, strict=True) if not ok
    ]
    # Its confidence means something: right answers are the surer ones on average.
    if not all(right):
        surer = np.mean([p for (_, p), ok in zip(answers, right, strict=True) if ok])
        assert surer > np.mean([p for (_, p), ok in zip(answers, right, strict=True) if not ok])
    # An input unlike its training data is answered, in its shape, with less confidence.
    odd, probability = tagger.answer("please call me back tomorrow")
    assert set(json.loads(odd)) <= set(ADDRESS_FIELDS)
    assert probability < np.median([p for _, p in answers])
    tagger.save(tmp_path)
    again = Tagger.load(tmp_path)
    for text, _ in test[:10]:
        assert again.answer(text)[0] == tagger.answer(text)[0]


def test_a_broken_tagger_folder_is_refused(tmp_path: Path) -> None:
    rng = random.Random(2)
    tagger = train_tagger([address(rng) for _ in range(20)], ADDRESS_FIELDS)
    tagger.save(tmp_path)
    config = json.loads((tmp_path / "tagger.json").read_text())
    config["features"] = config["features"][:-1]
    (tmp_path / "tagger.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="do not fit"):
        Tagger.load(tmp_path)
    (tmp_path / "tagger.json").unlink()
    with pytest.raises(ModelError, match="cannot read its tagger"):
        Tagger.load(tmp_path)


def test_nothing_aligns_is_an_error() -> None:
    with pytest.raises(ValueError, match="aligned"):
        train_tagger([("Kansas City", '{"s": "Missouri"}')], {"s": False})
