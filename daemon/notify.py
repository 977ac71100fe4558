"""How stillroom tells the user something: proposals and pauses. Desktop notifications plug in
here (a later release); the log notifier is always there."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("stillroom.daemon")


@dataclass(frozen=True)
class Notice:
    """One thing to tell: a proposal (answerable by id) or a pause."""

    kind: str  # "proposal" | "paused"
    task: str
    text: str
    proposal_id: int | None = None


class Notifier(Protocol):
    name: str

    def notify(self, notice: Notice) -> None:
        """Show the notice; must not raise for want of a desktop."""
        ...


class LogNotifier:
    """Writes notices to the daemon log; `stillroom proposals` shows them too."""

    name = "log"

    def notify(self, notice: Notice) -> None:
        if notice.kind == "proposal":
            log.info(
                "proposal #%s for %s: %s  (answer: stillroom proposals accept|later|never %s)",
                notice.proposal_id,
                notice.task,
                notice.text,
                notice.proposal_id,
            )
        else:
            log.warning("%s %s: %s", notice.task, notice.kind, notice.text)


REGISTRY: dict[str, type[Notifier]] = {"log": LogNotifier}
