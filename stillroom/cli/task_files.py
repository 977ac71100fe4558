"""The files `stillroom tasks new` reads: labelled examples and unlabelled inputs. A bad file
is named with the line that is wrong."""

from __future__ import annotations

import json
from pathlib import Path

from stillroom.errors import TaskError
from stillroom.registry import input_hash


def read_inputs(path: Path) -> list[str]:
    """Unlabelled inputs: one a line, or JSON lines of {"input": ...} (when the file is
    .jsonl or its first line is an object); repeats are dropped."""
    lines = _lines(path)
    first = next((line for line in lines if line.strip()), "")
    as_json = path.suffix == ".jsonl" or first.lstrip().startswith("{")
    texts, seen = [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        text = _json_input(path, number, line) if as_json else line.strip()
        if input_hash(text) not in seen:
            seen.add(input_hash(text))
            texts.append(text)
    if not texts:
        raise TaskError(f"{path}: no inputs in it")
    return texts


def _json_input(path: Path, number: int, line: str) -> str:
    try:
        data = json.loads(line)
    except ValueError:
        raise TaskError(f'{path}, line {number}: not JSON (expected {{"input": ...}})') from None
    text = data.get("input") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise TaskError(f'{path}, line {number}: expected {{"input": "some text"}}')
    return text


def _lines(path: Path) -> list[str]:
    """A UTF-8 file's lines; unreadable or undecodable files are named, with the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TaskError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TaskError(f"{path}, line {line}: not UTF-8 text") from None


def read_examples(path: Path) -> list[tuple[str, str]]:
    """Lines of {"input": ..., "output": ...}; a bad line is named by number."""
    rows = []
    for number, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            text, output = data["input"], data["output"]
        except (ValueError, KeyError, TypeError):
            raise TaskError(
                f'{path}, line {number}: expected {{"input": ..., "output": ...}}'
            ) from None
        if not isinstance(text, str) or not isinstance(output, str):
            raise TaskError(f"{path}, line {number}: input and output must be text")
        rows.append((text, output))
    return rows
