"""Rule deciders: which events a user-written rule acts on, and which it leaves alone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stillroom.config import Config
from stillroom.events import Event, FileFeatures, FilePayload
from stillroom.service.hooks.deciders import decide, deciders_from_config


def event(
    name: str,
    size: int = 2000,
    mime: str = "application/pdf",
    kind: str = "file.created",
    folder: str = "/home/u/Downloads",
    ours: bool = False,
) -> Event:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    features = FileFeatures(name=name, extension=ext, mime=mime, size=size)
    payload = FilePayload(
        path=f"{folder}/{name}", root=folder, features=features, by_stillroom=ours
    )
    return Event(source="filesystem", kind=kind, payload=payload)


CONFIG = Config.from_data(
    {
        "automations": [
            {"name": "off", "enabled": False, "action": {"kind": "copy", "to": "/x"}},
            {
                "name": "big-pdfs",
                "match": {
                    "extensions": ["pdf"],
                    "min_size": "1KB",
                    "folders": ["/home/u/Downloads"],
                },
                "action": {"kind": "move", "to": "/home/u/Documents"},
            },
            {
                "name": "shots",
                "match": {
                    "name": "Screenshot*",
                    "mime": "image/*",
                    "events": ["file.created", "file.moved"],
                },
                "action": {"kind": "convert_image", "format": "jpeg"},
            },
        ]
    }
)
DECIDERS = deciders_from_config(CONFIG)


def test_disabled_rules_are_not_deciders() -> None:
    assert [d.name for d in DECIDERS] == ["big-pdfs", "shots"]


def test_first_matching_rule_decides_with_full_confidence() -> None:
    decision = decide(DECIDERS, event("Paper.PDF"))
    assert decision is not None
    assert decision.decider == "big-pdfs" and decision.confidence == 1.0
    assert decision.action.kind == "move" and decision.action.to == Path("/home/u/Documents")


def test_each_condition_can_veto() -> None:
    assert decide(DECIDERS, event("small.pdf", size=10)) is None
    assert decide(DECIDERS, event("paper.pdf", folder="/home/u/Desktop")) is None
    assert decide(DECIDERS, event("paper.txt", mime="text/plain")) is None
    assert decide(DECIDERS, event("Screenshot 1.pdf", size=10)) is None  # mime not image/*


def test_glob_and_mime_glob_and_event_kinds() -> None:
    shot = decide(DECIDERS, event("screenshot 2.png", mime="image/png", kind="file.moved"))
    assert shot is not None and shot.decider == "shots"
    assert decide(DECIDERS, event("paper.pdf", kind="file.moved")) is None
    assert decide(DECIDERS, event("paper.pdf", kind="file.deleted")) is None


def test_stillroom_own_events_never_trigger_rules() -> None:
    assert decide(DECIDERS, event("paper.pdf", ours=True)) is None


def test_no_rule_acts_on_a_symlink_and_one_line_says_so(caplog: pytest.LogCaptureFixture) -> None:
    link = event("Paper.PDF")
    features = link.file().features
    assert features is not None
    payload = link.file().model_copy(
        update={"features": features.model_copy(update={"symlink": True})}
    )
    link = link.model_copy(update={"payload": payload})
    with caplog.at_level(logging.INFO, logger="stillroom.service"):
        assert decide(DECIDERS, link) is None
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["/home/u/Downloads/Paper.PDF is a symbolic link: no automation acts on it"]
    assert all(d.decide(link) is None for d in DECIDERS)
