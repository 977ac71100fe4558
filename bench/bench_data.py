"""The public data sets the benchmarks read (../shared/data, next to the repository), as
(input, label) rows, and the seeded per-class sampling every benchmark shares."""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
DATASETS = {
    # name: (folder, input column, label column)
    "banking77": ("banking77", "text", "category"),
    "linguist": ("linguist_filenames", "filename", "type"),
}


def load(name: str, split: str) -> list[tuple[str, str]]:
    folder, text_col, label_col = DATASETS[name]
    with open(DATA / folder / f"{split}.csv", newline="", encoding="utf-8") as f:
        return [(row[text_col], row[label_col]) for row in csv.DictReader(f)]


def sample(rows: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    """N per class, seeded per class, so a smaller N is a prefix of a larger one."""
    by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in rows:
        by_label[row[1]].append(row)
    out = []
    for label in sorted(by_label):
        group = by_label[label][:]
        random.Random(f"{seed}:{label}").shuffle(group)
        out += group[:n]
    return out


def write_json(out: Path, result: dict[str, Any]) -> None:
    """Write a results file whole or not at all (a killed run leaves the old one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
