"""When a generative student's answer counts as the teacher's: the metrics of its card.

Extraction: the normalized output equals the teacher's (JSON compared as data, text with its
whitespace collapsed); field F1 is reported beside it. Free text: embedding similarity and
ROUGE-L both clear the thresholds stated in the task's card.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stillroom.service.generation import is_copied

MIN_SIMILARITY = 0.85  # cosine of MiniLM embeddings, summary vs the teacher's
MIN_ROUGE_L = 0.45  # ROUGE-L F1 on lower-cased word tokens
Embed = Callable[[Sequence[str]], Any]  # texts -> unit-length rows
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Thresholds:
    """What a free-text answer must reach to count as agreeing with the teacher."""

    similarity: float = MIN_SIMILARITY
    rouge_l: float = MIN_ROUGE_L

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Thresholds:
        return cls(
            float(spec.get("min_similarity", MIN_SIMILARITY)),
            float(spec.get("min_rouge_l", MIN_ROUGE_L)),
        )


def normalize(text: str) -> str:
    """JSON as canonical data (keys sorted, strings trimmed), other text with whitespace
    collapsed: formatting never decides whether two extractions agree."""
    data = parse_json(text)
    if data is not None:
        return json.dumps(_trim(data), sort_keys=True, ensure_ascii=False)
    return " ".join(text.split())


def exact(answer: str, truth: str) -> bool:
    return normalize(answer) == normalize(truth)


def field_f1(answer: str, truth: str) -> float:
    """F1 over (field path, value) pairs; plain text counts its lines as fields."""
    got, want = _fields(answer), _fields(truth)
    if not got and not want:
        return 1.0
    common = sum((got & want).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(got.values()), common / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def rouge_l(answer: str, truth: str) -> float:
    """ROUGE-L F1: the longest common subsequence of lower-cased word tokens."""
    a, b = _WORD.findall(answer.lower()), _WORD.findall(truth.lower())
    if not a or not b:
        return float(a == b)
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def similarities(answers: Sequence[str], truths: Sequence[str], embed: Embed) -> list[float]:
    """Cosine of each answer's embedding with its truth's."""
    if not answers:
        return []
    vectors = np.asarray(embed([*answers, *truths]), dtype=np.float32)
    n = len(answers)
    return [float(v) for v in (vectors[:n] * vectors[n:]).sum(axis=1)]


@dataclass(frozen=True)
class Judged:
    correct: list[bool]
    scores: dict[str, list[float]]  # per metric, one value per answer


def judge(
    kind: str,
    answers: Sequence[str],
    truths: Sequence[str],
    embed: Embed | None = None,
    thresholds: Thresholds = Thresholds(),
) -> Judged:
    """Correctness of each answer for a task of `kind`, with the metrics behind it."""
    if kind == "extract":
        correct = [exact(a, t) for a, t in zip(answers, truths, strict=True)]
        f1 = [field_f1(a, t) for a, t in zip(answers, truths, strict=True)]
        return Judged(correct, {"exact": [float(c) for c in correct], "field_f1": f1})
    if embed is None:
        raise ValueError("free-text answers are judged by embedding similarity: give `embed`")
    rouge = [rouge_l(a, t) for a, t in zip(answers, truths, strict=True)]
    similar = similarities(answers, truths, embed)
    correct = [
        s >= thresholds.similarity and r >= thresholds.rouge_l
        for s, r in zip(similar, rouge, strict=True)
    ]
    return Judged(correct, {"rouge_l": rouge, "similarity": similar})


def parse_json(text: str) -> Any | None:
    """The JSON value in the text (an object or a list), or None."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        data: Any = json.loads(stripped)
    except ValueError:
        return None
    return data


def json_schema(outputs: Sequence[str]) -> dict[str, Any] | None:
    """A JSON schema every output fits, when all outputs are JSON lists or objects of one
    shape: generation then follows it (llama.cpp grammar) and always parses."""
    values = [parse_json(o) for o in outputs]
    if not values or any(v is None for v in values):
        return None
    return _schema_of(values)


def _schema_of(values: list[Any]) -> dict[str, Any] | None:
    kinds = {_json_type(v) for v in values}
    if len(kinds) != 1:
        if kinds <= {"integer", "number"}:
            return {"type": "number"}
        return None
    kind = kinds.pop()
    if kind == "array":
        items = [item for v in values for item in v]
        inner = _schema_of(items) if items else {"type": "string"}
        return {"type": "array", "items": inner} if inner else {"type": "array"}
    if kind == "object":
        keys = _key_order(values)
        properties = {}
        for key in keys:
            inner = _schema_of([v[key] for v in values if key in v])
            properties[key] = inner if inner else {}
        required = [k for k in keys if all(k in v for v in values)]
        return {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
    return {"type": kind}


def copied_from_input(pairs: Sequence[tuple[str, str]], schema: dict[str, Any] | None) -> bool:
    """Whether the teacher only ever copies: every string in every JSON output is made of runs
    of whole pieces of its input (`is_copied`). Its student's strings are then held to such
    runs (`copy_grammar`). Not where the schema leaves a part untyped: a free object's keys are
    strings too, and they need not be in the input."""
    if schema is None or not pairs or not _typed(schema):
        return False
    for text, output in pairs:
        data = parse_json(output)
        if data is None or not all(is_copied(v, text) for v in _strings(data)):
            return False
    return True


def _typed(schema: dict[str, Any]) -> bool:
    if "type" not in schema:
        return False
    if schema["type"] == "array" and not _typed(schema.get("items", {})):
        return False
    return all(_typed(s) for s in schema.get("properties", {}).values())


def _strings(data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v)]
    return []


def in_schema_order(text: str, schema: dict[str, Any] | None) -> str:
    """The teacher's JSON written again with every object's keys in the schema's order.

    The grammar lets the student write keys in that one order only; trained on the teacher's
    own order, a student that wants another key first is pushed onto a wrong one (an address
    that starts with "Apt 1B" gets "Apt" as its AddressNumber). Same data, so the exact match
    against the teacher is unchanged. Text that is not JSON is returned as it is.
    """
    data = parse_json(text)
    if schema is None or data is None:
        return text
    return json.dumps(_ordered(data, schema), ensure_ascii=False)


def _ordered(data: Any, schema: dict[str, Any]) -> Any:
    if isinstance(data, dict):
        properties = schema.get("properties", {})
        keys = [k for k in properties if k in data] + [k for k in data if k not in properties]
        return {k: _ordered(data[k], properties.get(k, {})) for k in keys}
    if isinstance(data, list):
        return [_ordered(v, schema.get("items", {})) for v in data]
    return data


def _key_order(objects: list[dict[str, Any]]) -> list[str]:
    """Keys in the order the teacher writes them most (by mean relative position): the
    grammar fixes one order; training targets are rewritten in it (`in_schema_order`)."""
    places: dict[str, list[float]] = {}
    for obj in objects:
        for i, key in enumerate(obj):
            places.setdefault(key, []).append(i / max(1, len(obj) - 1))
    return sorted(places, key=lambda k: (sum(places[k]) / len(places[k]), k))


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def _trim(data: Any) -> Any:
    if isinstance(data, str):
        return " ".join(data.split())
    if isinstance(data, list):
        return [_trim(v) for v in data]
    if isinstance(data, dict):
        return {str(k): _trim(v) for k, v in data.items()}
    return data


def _fields(text: str) -> Counter[str]:
    data = parse_json(text)
    if data is None:
        return Counter(line.strip() for line in text.splitlines() if line.strip())
    found: Counter[str] = Counter()
    _walk(_trim(data), "", found)
    return found


def _walk(data: Any, path: str, found: Counter[str]) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            _walk(value, f"{path}.{key}", found)
    elif isinstance(data, list):
        for value in data:  # list items count as a multiset: order is not a field
            _walk(value, f"{path}[]", found)
    else:
        found[f"{path}={json.dumps(data, ensure_ascii=False)}"] += 1
