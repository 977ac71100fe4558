"""Data sets: dedupe keeps the latest answer; the split is stratified and keeps every label."""

from __future__ import annotations

from collections import Counter

from stillroom.registry import Example
from stillroom.trainers.dataset import Item, dedupe, stratified_split


def test_dedupe_latest_answer_wins_and_whitespace_is_ignored() -> None:
    examples = [
        Example(1, 1, "invoice  march.pdf", "Documents", "user", None, 10.0),
        Example(2, 1, "photo.jpg", "Pictures", "user", None, 11.0),
        Example(3, 1, "invoice march.pdf", "Documents/Invoices", "correction", None, 12.0),
    ]
    assert dedupe(examples) == [
        Item("photo.jpg", "Pictures"),
        Item("invoice march.pdf", "Documents/Invoices"),
    ]


def test_split_is_stratified_disjoint_and_deterministic() -> None:
    items = [Item(f"text {i}", f"label{i % 4}") for i in range(400)] + [Item("rare", "only-one")]
    split = stratified_split(items, seed=3)
    assert split.sizes() == {"train": 201, "calibration": 120, "test": 80}
    assert Item("rare", "only-one") in split.train
    every = split.train + split.calibration + split.test
    assert sorted(every, key=lambda i: i.input) == sorted(items, key=lambda i: i.input)
    assert set(Counter(i.output for i in split.calibration).values()) == {30}
    assert stratified_split(items, seed=3) == split
    assert stratified_split(items, seed=4) != split


def test_random_split_caps_held_out_parts_so_large_tasks_train_on_more() -> None:
    from stillroom.trainers.generative import random_split

    small = random_split([Item(f"text {i}", f"out {i}") for i in range(100)])
    assert small.sizes() == {"train": 50, "calibration": 30, "test": 20}
    items = [Item(f"text {i}", f"out {i}") for i in range(1500)]
    large = random_split(items)
    assert large.sizes() == {"train": 1000, "calibration": 300, "test": 200}
    assert large == random_split(items)  # deterministic
    every = large.train + large.calibration + large.test
    assert sorted(i.input for i in every) == sorted(i.input for i in items)
