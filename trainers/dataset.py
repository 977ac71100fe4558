"""A task's data set: deduplicated examples in the train / calibration / test split each input
was given when it arrived (a fixed split: retrains and relabels never move an example)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stillroom.registry import SHARES as SHARES  # re-exported: the shares belong to the store
from stillroom.registry import Example, input_hash

# Cosine distance within which the encoder cannot tell two inputs apart (case, spacing,
# tokenisation): such a held-out input is a copy of a training one and would only flatter the
# bound. Files a digit apart in name ("invoice_01.pdf", "invoice_02.pdf": 0.007 as names,
# closer still with their features) stay: they are distinct inputs the user really gets, as
# live traffic does; so do a changed full stop (0.04) or a typo (0.17).
NEAR_COPY = 5e-4


@dataclass(frozen=True)
class Item:
    """One input and the output it should get."""

    input: str
    output: str


@dataclass(frozen=True)
class Split:
    train: list[Item]
    calibration: list[Item]
    test: list[Item]

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "calibration": len(self.calibration),
            "test": len(self.test),
        }


def dedupe(examples: Sequence[Example]) -> list[Item]:
    """One item per distinct input; when the same input got different outputs, the latest wins
    (a correction or the user's newer habit)."""
    latest: dict[str, Example] = {}
    for example in examples:
        key = input_hash(example.input)
        if key not in latest or (example.at, example.id) >= (latest[key].at, latest[key].id):
            latest[key] = example
    return [Item(e.input, e.output) for e in sorted(latest.values(), key=lambda e: e.id)]


def stored_split(examples: Sequence[Example]) -> Split:
    """`dedupe`d items in the splits stored with them. All rows of one input share a split (it
    follows the input's hash), so a relabel changes an item's output, never its split. Items
    keep the order their inputs first arrived in."""
    latest: dict[str, Example] = {}
    first: dict[str, int] = {}
    for example in examples:
        key = input_hash(example.input)
        first[key] = min(first.get(key, example.id), example.id)
        if key not in latest or (example.at, example.id) >= (latest[key].at, latest[key].id):
            latest[key] = example
    parts: dict[str, list[Item]] = {"train": [], "calibration": [], "test": []}
    for key in sorted(latest, key=first.__getitem__):
        example = latest[key]
        parts[example.split].append(Item(example.input, example.output))
    return Split(parts["train"], parts["calibration"], parts["test"])


def cap_held_out(split: Split, calibration: int, test: int) -> Split:
    """At most `calibration` and `test` held-out items (the earliest to arrive); the rest train.
    Later arrivals only ever add to train, so a held-out item stays held out."""
    return Split(
        split.train + split.calibration[calibration:] + split.test[test:],
        split.calibration[:calibration],
        split.test[:test],
    )


def stratified_split(
    items: Sequence[Item], shares: tuple[float, float, float] = SHARES, seed: int = 0
) -> Split:
    """Split each label's items by `shares` (for data sets with no stored split); a label's
    first item always goes to train, and rounding is carried across labels to keep the totals."""
    rng = random.Random(seed)
    by_label: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_label[item.output].append(item)
    train: list[Item] = []
    calibration: list[Item] = []
    test: list[Item] = []
    carry = [0.0, 0.0]
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        train.append(group[0])
        rest = group[1:]
        want_cal = len(group) * shares[1] + carry[0]
        want_test = len(group) * shares[2] + carry[1]
        n_cal = min(len(rest), int(want_cal))
        n_test = min(len(rest) - n_cal, int(want_test))
        carry = [want_cal - n_cal, want_test - n_test]
        calibration += rest[:n_cal]
        test += rest[n_cal : n_cal + n_test]
        train += rest[n_cal + n_test :]
    for part in (train, calibration, test):
        rng.shuffle(part)
    return Split(train, calibration, test)


def apart_from_train(distance: ArrayLike) -> NDArray[np.bool_]:
    """Which held-out inputs (by cosine distance to the nearest training input) may judge a
    student: all but the near-copies of a training input (exact copies never reach here,
    since all rows of one input share a split)."""
    kept: NDArray[np.bool_] = np.asarray(distance, dtype=np.float64) > NEAR_COPY
    return kept
