"""What every served student answers through: its version's calibrated threshold and scope
radius turn a confidence and a distance into an answer, or an abstention and why.

`trainers.calibration` fits the guarantee; serving needs only its rule (threshold, radius, and
how many more examples would help), read here from the version's stored guarantee.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from stillroom.manifest import read_manifest
from stillroom.registry import ModelVersion
from stillroom.service.scope import nearest_distance

if TYPE_CHECKING:
    from stillroom.service.engine import Engine
    from stillroom.service.generation import Generated

SCOPE_FILE = "scope.safetensors"  # a text-writing version's training inputs, embedded


@dataclass(frozen=True)
class Prediction:
    """A student's answer, or its abstention and why."""

    answer: str | None
    confidence: float
    abstained: bool
    reason: str | None = None
    best: str | None = None  # what it would have said, even when abstaining
    distance: float | None = None  # to the nearest training input (None: not measured)


@dataclass(frozen=True)
class Guard:
    """A guarantee as serving applies it: answer at or above `threshold`, within `radius`."""

    threshold: float | None  # None: no threshold passed calibration, it always abstains
    radius: float | None  # None: no scope check
    needed: int | None = None  # about how many more examples would help

    @classmethod
    def of(cls, guarantee: Mapping[str, Any]) -> Guard | None:
        """The rule of a stored guarantee; None for a version not calibrated yet."""
        if not guarantee:
            return None
        return cls(guarantee["threshold"], guarantee["radius"], guarantee.get("needed"))

    def closed(self) -> str | None:
        """Why it answers nothing at all, or None when a threshold holds."""
        if self.threshold is not None:
            return None
        more = f"; needs about {self.needed} more examples" if self.needed else ""
        return "no guarantee holds yet" + more

    def out_of_scope(self, distance: float) -> bool:
        return self.radius is not None and distance > self.radius

    def refusal(self, confidence: float, distance: float) -> str | None:
        """Why an answer this confident, this far from training, is withheld; None: answer."""
        closed = self.closed()
        if closed is not None:
            return closed
        if self.out_of_scope(distance):
            return "unlike anything it was trained on"
        assert self.threshold is not None
        if confidence < self.threshold:
            return f"unsure (confidence below {self.threshold:.2f})"
        return None


def guard_of(version: ModelVersion) -> tuple[Guard | None, Any]:
    """A text-writing version's guard and its training inputs' embeddings (the out-of-scope
    check), once its manifest holds: a missing, changed or added file is refused here. A
    version being calibrated has no guarantee yet: it may only answer when forced."""
    from safetensors.numpy import load_file

    folder = Path(version.path)
    read_manifest(folder)
    vectors = load_file(str(folder / SCOPE_FILE))["train_vectors"].astype("float32")
    return Guard.of(version.guarantee), vectors


class Forced(Protocol):
    """A student that answers one text at a time, judged through its calibrated guarantee."""

    engine: Engine
    guarantee: Guard | None
    train_vectors: Any

    def forced(self, texts: Sequence[str]) -> list[Generated]: ...


def guarded(student: Forced, texts: Sequence[str]) -> list[Prediction]:
    """A student's answers where its guarantee allows; elsewhere it abstains and says why
    (not calibrated, too few examples, unlike its training inputs, or unsure). Inputs out of
    scope are not answered at all."""
    g = student.guarantee
    if g is None:
        return [Prediction(None, 0.0, True, "not calibrated yet") for _ in texts]
    closed = g.closed()
    if closed is not None:
        return [Prediction(None, 0.0, True, closed) for _ in texts]
    far = nearest_distance(student.train_vectors, student.engine.embed(texts))
    out = []
    for text, distance in zip(texts, far, strict=True):
        if g.out_of_scope(distance):
            far_off = "unlike anything it was trained on"
            out.append(Prediction(None, 0.0, True, far_off, distance=float(distance)))
            continue
        (answer,) = student.forced([text])
        reason = g.refusal(answer.confidence, distance)
        said = None if reason else answer.text
        out.append(
            Prediction(said, answer.confidence, bool(reason), reason, answer.text, float(distance))
        )
    return out
