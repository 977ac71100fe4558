"""The local-answer hook: before a chat completion is forwarded, an Answerer may answer it.

The gateway asks `decide` with the request body; a Decision with a `reply` is answered
locally, anything else is forwarded, and `settle` then hears what the provider said.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class LocalReply:
    """What a task's student would answer, from which model version, and how sure it is."""

    task: str
    version: int
    text: str
    confidence: float


@dataclass(frozen=True)
class Decision:
    """What to do with one request: answer it, forward it as an audit, or just forward it."""

    reply: LocalReply | None = None  # answer locally with this text
    audit: LocalReply | None = None  # forward anyway; compare upstream's answer with this
    task: str | None = None  # the matched task, for the record
    reason: str = "no task"  # why it was (not) answered locally; "audit": drawn for an audit
    abstained: bool = False  # forwarded because the student abstained, and not audited


FORWARD = Decision()


class Answerer(Protocol):
    def decide(self, body: dict[str, Any]) -> Decision:
        """Blocking (a student may run); the gateway calls it in a worker thread."""
        ...

    def settle(self, decision: Decision, upstream_text: str | None, latency_ms: float) -> None:
        """After a forward: the provider's answer text (None when it failed) and its latency."""
        ...
