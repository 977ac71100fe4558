"""How generative answers are judged: exact match on normalized extractions, field F1, ROUGE-L
and embedding similarity for free text, and the JSON schema inferred from teacher outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stillroom.service.generation import schema_grammar
from stillroom.service.judge import (
    Thresholds,
    copied_from_input,
    exact,
    field_f1,
    in_schema_order,
    json_schema,
    judge,
    normalize,
    rouge_l,
)


def test_extractions_agree_when_their_data_agree() -> None:
    assert exact('["Ada", "Bo"]', '[ "Ada","Bo" ]')
    assert exact('{"b": 1, "a": "x  y"}', '{"a": "x y", "b": 1}')
    assert exact("  New   York ", "New York")
    assert not exact('["Ada", "Bo"]', '["Bo", "Ada"]'), "order is part of a list"
    assert not exact('["Ada"]', '["ada"]'), "case is part of a name"
    assert normalize('{"a": [1, 2]}') == '{"a": [1, 2]}'


def test_field_f1_gives_partial_credit() -> None:
    truth = '{"AddressNumber": "12", "StreetName": "Main", "StreetNamePostType": "St"}'
    assert field_f1(truth, truth) == 1.0
    two_of_three = '{"AddressNumber": "12", "StreetName": "Main", "StreetNamePostType": "Ave"}'
    assert field_f1(two_of_three, truth) == pytest.approx(2 / 3)
    assert field_f1('["Ada", "Cy"]', '["Ada", "Bo"]') == pytest.approx(0.5)
    assert field_f1("nothing alike", truth) == 0.0


def test_rouge_l_is_the_longest_common_subsequence_f1() -> None:
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS "the cat the mat" = 4 of 6 and 4 of 5 tokens.
    assert rouge_l("the cat sat on the mat", "the cat lay the mat") == pytest.approx(
        2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5)
    )
    assert rouge_l("A B C", "x y z") == 0.0
    assert rouge_l("", "") == 1.0


def test_free_text_needs_both_similarity_and_rouge() -> None:
    table = {
        "we propose a new optimizer": [1.0, 0.0],
        "a new optimizer is proposed": [0.95, np.sqrt(1 - 0.95**2)],
        "we propose a new dog": [0.0, 1.0],
    }

    def embed(texts: object) -> np.ndarray:
        return np.array([table[t] for t in texts], dtype=np.float32)  # type: ignore[attr-defined]

    truth = "we propose a new optimizer"
    verdict = judge(
        "generate",
        ["a new optimizer is proposed", "we propose a new dog", truth],
        [truth] * 3,
        embed,
        Thresholds(similarity=0.9, rouge_l=0.3),
    )
    # Close in meaning and wording; same words but another meaning; identical.
    assert verdict.correct == [True, False, True]
    assert verdict.scores["similarity"][1] == pytest.approx(0.0)
    assert verdict.scores["rouge_l"][1] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="embed"):
        judge("generate", ["x"], ["y"])


def test_schema_from_teacher_outputs_becomes_a_grammar() -> None:
    outputs = ['["Ada", "Bo"]', '["Cy"]', "[]"]
    assert json_schema(outputs) == {"type": "array", "items": {"type": "string"}}
    records = ['{"AddressNumber": "12", "StreetName": "Main"}', '{"StreetName": "Elm"}']
    schema = json_schema(records)
    assert schema is not None
    assert schema["required"] == ["StreetName"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"AddressNumber", "StreetName"}
    assert json_schema(["plain text", '["x"]']) is None
    assert json_schema(['{"a": 1}', "[1]"]) is None, "one shape or no schema"
    assert "root" in schema_grammar(schema)
    json.dumps(schema)  # stored in student.json


def test_training_targets_follow_the_grammars_key_order() -> None:
    # Most records start with the number; one starts with its apartment.
    records = [
        '{"AddressNumber": "12", "StreetName": "Main", "OccupancyType": "Apt"}',
        '{"AddressNumber": "9", "StreetName": "Elm"}',
        '{"OccupancyType": "Apt", "OccupancyIdentifier": "1B", "AddressNumber": "626"}',
    ]
    schema = json_schema(records)
    assert schema is not None
    order = list(schema["properties"])
    assert order.index("AddressNumber") < order.index("OccupancyType")
    rewritten = in_schema_order(records[2], schema)
    assert list(json.loads(rewritten)) == [k for k in order if k in json.loads(records[2])]
    assert exact(rewritten, records[2])  # same data: the teacher's answer still agrees
    nested = json_schema(['[{"b": 1, "a": 2}]', '[{"b": 3, "a": 4}]'])
    assert in_schema_order('[{"a": 5, "b": 6}]', nested) == '[{"b": 6, "a": 5}]'
    assert in_schema_order("not json", schema) == "not json"
    assert in_schema_order(records[0], None) == records[0]


def test_copying_is_recognised_only_where_the_teacher_always_copies() -> None:
    pairs = [
        (
            "Apt 1B 626 E Kilbourn Ave Milwaukee, WI",
            '{"OccupancyIdentifier": "1B", "PlaceName": "Milwaukee"}',
        ),
        ("20 Benton Pl St Louis, MO", '{"PlaceName": "St Louis", "StateName": "MO"}'),
    ]
    schema = json_schema([o for _, o in pairs])
    assert copied_from_input(pairs, schema)
    # One value the teacher wrote out ("Missouri" for "MO"): the student must be free to.
    rewritten = [*pairs, ("9 Elm St Kansas City, MO", '{"StateName": "Missouri"}')]
    assert not copied_from_input(rewritten, json_schema([o for _, o in rewritten]))
    # Half a word is not copying; nor is text that is not JSON.
    assert not copied_from_input([("Chicago, IL", '{"PlaceName": "Chic"}')], schema)
    assert not copied_from_input([("a b", "a")], None)
    # Numbers are left alone; an untyped part (mixed values) turns copying off.
    numbers = [("Room 12 of 30", '{"room": "12", "floors": 30}')]
    assert copied_from_input(numbers, json_schema([o for _, o in numbers]))
    mixed = [("Room 12", '{"room": "12"}'), ("Room 12", '{"room": 12}'), ("x", '{"room": [1]}')]
    assert not copied_from_input(mixed, json_schema([o for _, o in mixed]))
