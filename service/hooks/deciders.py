"""Deciders pick an action for an event, with a confidence, or abstain (return None).

User-written rules are the first kind; learned tasks plug in through the same interface.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stillroom.config import ActionConfig, Automation, Config, Match
from stillroom.events import Event, FileFeatures

DECIDED_KINDS = frozenset({"file.created", "file.moved", "file.modified"})
log = logging.getLogger("stillroom.service")


@dataclass(frozen=True)
class Decision:
    """An action a decider wants taken, and how sure it is (1.0 for a rule)."""

    action: ActionConfig
    confidence: float
    decider: str


class Decider(Protocol):
    name: str

    def decide(self, event: Event) -> Decision | None:
        """An action for this event, or None to abstain."""
        ...


class RuleDecider:
    """A rule from the config: every condition of its `match` must hold."""

    def __init__(self, automation: Automation) -> None:
        self.automation = automation
        self.name = automation.name

    def decide(self, event: Event) -> Decision | None:
        if event.kind not in self.automation.match.events or event.kind not in DECIDED_KINDS:
            return None
        payload = event.file()
        if payload.by_stillroom or payload.features is None or payload.features.symlink:
            return None
        if not matches(self.automation.match, Path(payload.path), payload.features):
            return None
        return Decision(self.automation.action, 1.0, self.name)


def matches(match: Match, path: Path, features: FileFeatures) -> bool:
    """Whether a file satisfies every condition of a rule's match."""
    if match.folders is not None and not any(_inside(path, f) for f in match.folders):
        return False
    if match.extensions is not None and features.extension not in match.extensions:
        return False
    if match.name is not None and not any(
        fnmatch.fnmatch(features.name.lower(), pattern.lower()) for pattern in match.name
    ):
        return False
    if match.mime is not None and not any(fnmatch.fnmatch(features.mime, p) for p in match.mime):
        return False
    if match.min_size is not None and features.size < match.min_size:
        return False
    return not (match.max_size is not None and features.size > match.max_size)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


DeciderFactory = Callable[[Automation], Decider]

# Config name -> decider class. Learned students register here too.
REGISTRY: dict[str, DeciderFactory] = {"rule": RuleDecider}


def deciders_from_config(config: Config) -> list[Decider]:
    """The enabled automations of a config, in file order (the first that decides wins)."""
    return [REGISTRY["rule"](a) for a in config.automations if a.enabled]


def is_symlink(event: Event) -> bool:
    """A file event about a symbolic link: no automation acts on one."""
    if event.source != "filesystem" or event.kind not in DECIDED_KINDS:
        return False
    features = event.file().features
    return features is not None and features.symlink


def decide(deciders: list[Decider], event: Event) -> Decision | None:
    if is_symlink(event):
        log.info("%s is a symbolic link: no automation acts on it", event.file().path)
        return None
    for decider in deciders:
        decision = decider.decide(event)
        if decision is not None:
            return decision
    return None
