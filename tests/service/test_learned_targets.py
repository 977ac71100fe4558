"""A student's answer is untrusted input: it moves a file only into a folder it was trained
on, inside a destination root, and never into a hidden, program or login-items folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from stillroom.cli.task_card import card
from stillroom.config import MoveAction
from stillroom.events import Event, FileFeatures, FilePayload
from stillroom.registry import Registry
from stillroom.service.hooks.learned import TaskDecider
from stillroom.service.hooks.targets import RefusedTarget, move_target
from stillroom.service.students import Answer, StudentClient
from stillroom.store import Store

HOSTILE = [
    "../../.config/autostart",
    "/etc/cron.d",
    "~/.ssh",
    ".ssh",
    "Documents/../.config",
    "Documents//Invoices",
    "Documents/.hidden",
    "Documents/bin",
    "Documents/Library/LaunchAgents",
    "Documents/autostart",
    "Documents/Start Menu",
    "Pictures",  # a real folder, but not a destination root
    "Documents/escape",  # a link inside the root to a folder outside it
]
GOOD = "Documents/Invoices"


class ScriptedStudent(StudentClient):
    """The student's side of the interface, answering what the test says: the model is the
    adversary here, and a trained one only says its labels."""

    def __init__(self) -> None:
        super().__init__()
        self.next: str | None = None

    def predict(self, version_id: int, inputs: list[str]) -> list[Answer]:
        return [Answer(self.next, 0.99, False, None, self.next)]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    for folder in ("Downloads", "Documents/Invoices", "Pictures", ".config/autostart"):
        (home / folder).mkdir(parents=True)
    os.symlink(home / ".config" / "autostart", home / "Documents" / "escape")
    return home


def arrived(home: Path, name: str = "invoice-7.pdf") -> Event:
    path = home / "Downloads" / name
    path.write_text("INVOICE #7")
    features = FileFeatures(name=name, extension="pdf", mime="application/pdf", size=10)
    payload = FilePayload(path=str(path), root=str(home / "Downloads"), features=features)
    return Event(source="filesystem", kind="file.created", payload=payload, id=1)


def decider(store: Store, home: Path, kind: str = "classify") -> tuple[TaskDecider, Registry]:
    registry = Registry(store)
    spec = {"input_kind": "file", "folder": str(home / "Downloads")}
    task = registry.create_task("sort-downloads", kind, origin="detector", spec=spec)
    labels = {GOOD: 40, **dict.fromkeys(HOSTILE, 3)}
    version = registry.add_version(
        task,
        1,
        student="minilm-logreg",
        path="/nowhere",
        metrics={"labels": labels},
        guarantee={},
        status="active",
    )
    client = ScriptedStudent()
    return TaskDecider(task, version, client, store, home, [home / "Documents"]), registry


def test_every_hostile_answer_is_refused_logged_and_counted(
    store: Store, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task_decider, registry = decider(store, home)
    assert isinstance(task_decider.client, ScriptedStudent)
    event = arrived(home)
    for answer in [*HOSTILE, "Documents/Never-Trained"]:
        task_decider.client.next = answer
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="stillroom.service"):
            assert task_decider.decide(event) is None, answer
        [line] = [r.getMessage() for r in caplog.records]
        assert f"refused the answer {answer!r}" in line and "invoice-7.pdf stays" in line
    assert (home / "Downloads" / "invoice-7.pdf").exists()
    assert list((home / ".config" / "autostart").iterdir()) == []
    task = registry.task("sort-downloads")
    assert task.spec["refused_targets"] == len(HOSTILE) + 1
    version = registry.versions(task)[0]
    assert f"refused targets: {len(HOSTILE) + 1}" in card(task, 0, version, [version])

    task_decider.client.next = GOOD
    decision = task_decider.decide(event)
    assert decision is not None and isinstance(decision.action, MoveAction)
    assert decision.action.to == Path(os.path.realpath(home / GOOD))


def test_only_a_classify_task_chooses_where_a_file_goes(store: Store, home: Path) -> None:
    task_decider, registry = decider(store, home, kind="extract")
    assert isinstance(task_decider.client, ScriptedStudent)
    task_decider.client.next = GOOD
    assert task_decider.decide(arrived(home)) is None
    assert registry.task("sort-downloads").spec["refused_targets"] == 1


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("/home/u/Documents", "absolute path"),
        ("Documents/../../etc", "'..'"),
        ("Documents/", "empty"),
        ("Documents/.git", "hidden folder"),
        ("Documents/Applications", "programs, settings or login items"),
        ("Documents\\..\\x", "not a plain folder name"),
    ],
)
def test_move_target_reasons(tmp_path: Path, answer: str, reason: str) -> None:
    with pytest.raises(RefusedTarget, match=reason):
        move_target(
            answer, kind="classify", labels={answer}, home=tmp_path, roots=[tmp_path / "Documents"]
        )


def test_move_target_needs_a_root(tmp_path: Path) -> None:
    with pytest.raises(RefusedTarget, match="no destination roots"):
        move_target(GOOD, kind="classify", labels={GOOD}, home=tmp_path, roots=[])
    target = move_target(
        "Documents",
        kind="classify",
        labels={"Documents"},
        home=tmp_path,
        roots=[tmp_path / "Documents"],
    )
    assert target == Path(os.path.realpath(tmp_path / "Documents"))
