"""Proposals from live shadow evidence, and the user's three answers (real store, no model)."""

from __future__ import annotations

import pytest
from scipy.stats import binom

from stillroom.binomial import breaks_bound, upper_tail
from stillroom.daemon.notify import Notice
from stillroom.daemon.proposals import answer, listing, review
from stillroom.errors import TaskError
from stillroom.predictions import live_stats, record
from stillroom.registry import Registry
from stillroom.store import Store


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def notify(self, notice: Notice) -> None:
        self.notices.append(notice)


def shadow_task(store: Store, name: str = "sort", bound: float = 0.05) -> int:
    registry = Registry(store)
    task = registry.create_task(
        name,
        "classify",
        origin="detector",
        spec={"input_kind": "file", "folder": "/home/u/Downloads"},
    )
    version = registry.add_version(
        task,
        1,
        student="s",
        path="/m",
        metrics={},
        guarantee={"bound": bound, "coverage": 0.9},
        status="shadow",
    )
    return version.id


def judge(store: Store, version_id: int, right: int, wrong: int, unsure: int = 0) -> None:
    """Shadow predictions whose truths the user's moves settled."""
    for i in range(right + wrong + unsure):
        with store.transaction() as db:
            db.execute(
                "INSERT INTO events (at, source, kind, path, payload, bytes)"
                " VALUES (0, 'filesystem', 'file.created', ?, '{}', 2)",
                (f"/d/{i}",),
            )
            event_id = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        abstained = i >= right + wrong
        answer_ = None if abstained else "Documents"
        record(store, version_id, "shadow", f"file {i}", answer_, 0.9, abstained, event_id)
        truth = "Documents" if i < right else "Pictures"
        with store.transaction() as db:
            db.execute("UPDATE predictions SET truth = ? WHERE event_id = ?", (truth, event_id))


@pytest.mark.parametrize(
    ("k", "n", "p"), [(0, 10, 0.1), (3, 20, 0.05), (7, 300, 0.01), (40, 1000, 0.03)]
)
def test_binomial_tail_matches_scipy(k: int, n: int, p: float) -> None:
    assert upper_tail(k, n, p) == pytest.approx(binom.sf(k - 1, n, p), rel=1e-9, abs=1e-15)


def test_breaks_bound_needs_evidence() -> None:
    assert not breaks_bound(1, 10, 0.05)  # one slip in ten is not proof
    assert breaks_bound(3, 10, 0.05)
    assert not breaks_bound(0, 0, 0.05)


def test_too_little_live_evidence_waits(store: Store) -> None:
    version_id = shadow_task(store)
    judge(store, version_id, right=5, wrong=0)
    assert review(store, Recorder()) == []


def test_agreeing_shadow_is_proposed_once_with_its_evidence(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/elsewhere")  # a folder outside home keeps its whole path
    version_id = shadow_task(store)
    judge(store, version_id, right=30, wrong=0, unsure=3)
    assert live_stats(store, version_id, "shadow").agreement == 1.0
    notifier = Recorder()
    (proposal,) = review(store, notifier)
    assert proposal.text == (
        "I can sort /home/u/Downloads: 100% agreement with your last 30 moves;"
        " I'll leave the 9% I'm unsure of alone"
    )
    assert notifier.notices == [Notice("proposal", "sort", proposal.text, proposal.id)]
    assert review(store, notifier) == []  # an open proposal is not repeated
    assert [p.id for p in listing(store)] == [proposal.id]


def test_proposal_names_the_folder_from_home_and_never_says_zero_unsure(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/home/u")
    version_id = shadow_task(store)
    judge(store, version_id, right=12, wrong=0)
    (proposal,) = review(store, Recorder())
    assert proposal.text == (
        "I can sort ~/Downloads: 100% agreement with your last 12 moves;"
        " I was sure of every one, and will still leave alone any I'm unsure of"
    )


def test_a_shadow_that_breaks_its_bound_is_rejected(store: Store) -> None:
    version_id = shadow_task(store)
    judge(store, version_id, right=20, wrong=6)
    assert review(store, Recorder()) == []
    assert Registry(store).version(version_id).status == "rejected"


def test_answers(store: Store) -> None:
    registry = Registry(store)
    accepted_id = shadow_task(store, "a")
    declined_id = shadow_task(store, "b")
    later_id = shadow_task(store, "c")
    for version_id in (accepted_id, declined_id, later_id):
        judge(store, version_id, right=20, wrong=0)
    proposals = {p.task: p for p in review(store, Recorder())}
    answer(store, proposals["a"].id, "accept")
    assert registry.version(accepted_id).status == "active"
    assert registry.task("a").state == "active"
    answer(store, proposals["b"].id, "never")
    assert registry.task("b").state == "declined"
    answer(store, proposals["c"].id, "later")
    assert review(store, Recorder()) == []  # "later" waits a few days; "never" is final
    with pytest.raises(TaskError, match="already answered"):
        answer(store, proposals["a"].id, "never")
    with pytest.raises(TaskError, match="one of accept, later, never"):
        answer(store, proposals["c"].id, "maybe")


def test_accepted_task_promotes_new_versions_without_asking(store: Store) -> None:
    registry = Registry(store)
    first = shadow_task(store)
    task = registry.task("sort")
    registry.set_status(first, "active")
    second = registry.add_version(
        task, 2, student="s", path="/m2", metrics={}, guarantee={"bound": 0.05}, status="shadow"
    )
    judge(store, second.id, right=15, wrong=0)
    assert review(store, Recorder()) == []
    assert registry.version(second.id).status == "active"
    assert registry.version(first).status == "retired"
