"""Teacher outputs as labelled spans of their input, and back: what a tagger learns and writes.

An extract task whose teacher only copies writes every string as runs of whole pieces of the
input (`service.generation.is_copied`). `align` finds the B-/I- label per field of each piece
("O" outside) that writes a teacher output back exactly; `service.tagger.write` turns a
labelling into the JSON it stands for. Shapes: an object whose values are strings (runs joined
by a space) or lists of strings (one item per run), or a list of strings (`fields_of`).
"""

from __future__ import annotations

from typing import Any

from stillroom.service.generation import Piece, pieces
from stillroom.service.tagger import LIST, OUTSIDE, write


def fields_of(schema: dict[str, Any] | None) -> dict[str, bool] | None:
    """The fields a tagger writes for this schema (name -> is a list), or None when it
    cannot write the schema's shape."""
    if schema is None:
        return None
    if _is_list_of_strings(schema):
        return {LIST: True}
    if schema.get("type") != "object" or not schema.get("properties"):
        return None
    out: dict[str, bool] = {}
    for name, inner in schema["properties"].items():
        if inner.get("type") == "string":
            out[name] = False
        elif _is_list_of_strings(inner):
            out[name] = True
        else:
            return None
    return out


def _is_list_of_strings(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "array" and schema.get("items", {}).get("type") == "string"


def _values(data: Any, fields: dict[str, bool]) -> list[tuple[str, list[str]]] | None:
    """(field, its runs' texts) in field order; None when the data is not of the shape."""
    if list(fields) == [LIST]:
        data = {LIST: data}
    if not isinstance(data, dict) or any(k not in fields for k in data):
        return None
    out = []
    for name, is_list in fields.items():
        if name not in data:
            continue
        value = data[name]
        items = value if is_list else [value]
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            return None
        out.append((name, items))
    return out


def align(text: str, output: str, fields: dict[str, bool]) -> list[str] | None:
    """The B-/I-/O label of each piece of `text` that writes `output` back exactly, or None
    where no such labelling is found (the example is then not trained on)."""
    from stillroom.service.judge import normalize, parse_json

    data = parse_json(output)
    values = _values(data, fields) if data is not None else None
    if values is None:
        return None
    have = pieces(text)
    labels = [OUTSIDE] * len(have)
    for name, items in values:
        for item in items:
            if not _place(item, have, labels, name, fields[name]):
                return None
    if normalize(write(text, labels, fields)) != normalize(output):
        return None
    return labels


def _place(item: str, have: list[Piece], labels: list[str], name: str, is_list: bool) -> bool:
    """Label the leftmost free runs of `have` that spell `item` (a list item: one run)."""
    want = pieces(item)
    if not want:
        return False
    i = 0
    while i < len(want):
        best_at, best_len = -1, 0
        for at in range(len(have)):
            n = 0
            while (
                i + n < len(want)
                and at + n < len(have)
                and labels[at + n] == OUTSIDE
                and have[at + n].text == want[i + n].text
                and (n == 0 or bool(have[at + n].gap) == bool(want[i + n].gap))
            ):
                n += 1
            # A run ends at the value's end or where the value has a space.
            while n and i + n < len(want) and not want[i + n].gap:
                n -= 1
            if n > best_len:
                best_at, best_len = at, n
        if best_len == 0 or (is_list and best_len < len(want)):
            return False
        for k in range(best_len):
            labels[best_at + k] = ("B-" if k == 0 else "I-") + name
        i += best_len
    return True
