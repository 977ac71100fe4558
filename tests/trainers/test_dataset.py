"""Data sets: dedupe keeps the latest answer; each input keeps the split it arrived in."""

from __future__ import annotations

import random
from collections import Counter

from stillroom.registry import Example, Registry, input_hash, split_of
from stillroom.store import Store
from stillroom.trainers.dataset import (
    Item,
    Split,
    cap_held_out,
    dedupe,
    stored_split,
    stratified_split,
)


def test_dedupe_latest_answer_wins_and_whitespace_is_ignored() -> None:
    examples = [
        Example(1, 1, "invoice  march.pdf", "Documents", "user", None, 10.0, "test"),
        Example(2, 1, "photo.jpg", "Pictures", "user", None, 11.0, "train"),
        Example(3, 1, "invoice march.pdf", "Documents/Invoices", "correction", None, 12.0, "test"),
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


def test_held_out_parts_are_capped_so_large_tasks_train_on_more() -> None:
    items = [Item(f"text {i}", f"out {i}") for i in range(1500)]
    split = Split(items[:750], items[750:1200], items[1200:])
    capped = cap_held_out(split, 300, 200)
    assert capped.sizes() == {"train": 1000, "calibration": 300, "test": 200}
    assert capped.calibration == items[750:1050] and capped.test == items[1200:1400]
    assert sorted(i.input for i in capped.train + capped.calibration + capped.test) == sorted(
        i.input for i in items
    )
    small = Split(items[:50], items[50:80], items[80:100])
    assert cap_held_out(small, 300, 200) == small


def topic_rows(n: int, seed: int = 0) -> list[tuple[str, str, str, None]]:
    rng = random.Random(seed)
    return [(f"note {rng.random():.12f}", f"label{i % 3}", "user", None) for i in range(n)]


def test_shares_are_close_to_50_30_20(store: Store) -> None:
    registry = Registry(store)
    task = registry.create_task("t", "classify")
    assert registry.add_examples(task, topic_rows(1000)) == 1000
    sizes = stored_split(registry.examples(task)).sizes()
    assert abs(sizes["train"] - 500) <= 50
    assert abs(sizes["calibration"] - 300) <= 45
    assert abs(sizes["test"] - 200) <= 40


def test_relabelling_a_calibration_example_moves_nothing(store: Store) -> None:
    registry = Registry(store)
    task = registry.create_task("t", "classify")
    registry.add_examples(task, topic_rows(200))
    before = stored_split(registry.examples(task))
    relabelled = before.calibration[0]
    registry.add_examples(task, [(relabelled.input, "label9", "correction", None)])
    after = stored_split(registry.examples(task))
    assert after.train == before.train and after.test == before.test
    assert [i.input for i in after.calibration] == [i.input for i in before.calibration]
    assert after.calibration[0] == Item(relabelled.input, "label9")
    assert after.calibration[1:] == before.calibration[1:]


def test_an_input_always_lands_in_the_same_split(store: Store) -> None:
    registry = Registry(store)
    first, second = registry.create_task("a", "classify"), registry.create_task("b", "classify")
    rows = topic_rows(60)
    registry.add_examples(first, rows)
    # The same inputs, re-added with other outputs and spacing, in another order, elsewhere.
    again = [(f"  {text} ", "other", "teacher", None) for text, _, _, _ in reversed(rows)]
    registry.add_examples(first, again)
    registry.add_examples(second, again)
    split_a = {" ".join(e.input.split()): e.split for e in registry.examples(first)}
    split_b = {" ".join(e.input.split()): e.split for e in registry.examples(second)}
    assert len(split_a) == len(split_b) == 60
    # An input lands where its hash says, but for its label's first example, which goes to
    # train so that every label can be learned (label0-2 in the first task, "other" in the
    # second); a repeat keeps the split its input arrived in.
    firsts_a = {" ".join(text.split()) for text, _, _, _ in rows[:3]}
    firsts_b = {" ".join(again[0][0].split())}
    for splits, firsts in ((split_a, firsts_a), (split_b, firsts_b)):
        for text, split in splits.items():
            assert split == ("train" if text in firsts else split_of(input_hash(text))), text
    by_input: dict[str, set[str]] = {}
    for e in registry.examples(first):
        by_input.setdefault(" ".join(e.input.split()), set()).add(e.split)
    assert all(len(splits) == 1 for splits in by_input.values())  # never straddles splits
    parts = stored_split(registry.examples(first))
    assert sum(parts.sizes().values()) == 60
    assert {i.output for p in (parts.train, parts.calibration, parts.test) for i in p} == {"other"}


def test_a_labels_first_example_trains_and_stays_there(store: Store) -> None:
    registry = Registry(store)
    task = registry.create_task("t", "classify")
    registry.add_examples(task, topic_rows(90))
    held_out = [e for e in registry.examples(task) if e.split != "train"]
    # Rare labels arrive later, each with one example whose hash alone would hold it out.
    rare = [(e.input + " rare", f"rare{i}", "user", None) for i, e in enumerate(held_out[:5])]
    rare = [r for r in rare if split_of(input_hash(r[0])) != "train"]
    assert rare
    registry.add_examples(task, rare)
    trained = {i.output for i in stored_split(registry.examples(task)).train}
    assert {output for _, output, _, _ in rare} <= trained
    # A second example of a rare label lands by its hash; the first stays in train.
    registry.add_examples(task, [(rare[0][0], "label0", "correction", None)])
    assert Item(rare[0][0], "label0") in stored_split(registry.examples(task)).train


def test_only_real_inputs_drawn_uniformly_are_held_out(store: Store) -> None:
    registry = Registry(store)
    task = registry.create_task("t", "classify")
    registry.add_examples(task, topic_rows(30))  # every label has its first example
    rows = topic_rows(400)[30:]
    real = [(f"real {t}", o, "teacher", None) for t, o, _, _ in rows[:100]]
    made = [(f"made {t}", o, "synthetic", None) for t, o, _, _ in rows[100:200]]
    fixed = [(f"fixed {t}", o, "correction", None) for t, o, _, _ in rows[200:300]]
    unsure = [(f"unsure {t}", o, "teacher", None) for t, o, _, _ in rows[300:]]
    registry.add_examples(task, real + made + fixed)
    registry.add_examples(task, unsure, train_only=True)
    split = {e.input: e.split for e in registry.examples(task)}
    # Model-written inputs, corrections (chosen by being errors) and calls forwarded because
    # the student was unsure (harder than the task's traffic) only ever train...
    for text, _, _, _ in made + fixed + unsure:
        assert split[text] == "train", text
    # ...while the real ones land where their hash says, some of them held out.
    assert all(split[t] == split_of(input_hash(t)) for t, _, _, _ in real)
    assert {split[t] for t, _, _, _ in real} == {"train", "calibration", "test"}
    # A real input seen first as train-only keeps its split when it comes again uniformly.
    again = [(t, o, "teacher", None) for t, o, _, _ in unsure]
    registry.add_examples(task, [(t, "label9", s, e) for t, _, s, e in again])
    assert all(e.split == "train" for e in registry.examples(task) if e.input.startswith("unsure"))
