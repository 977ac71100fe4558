"""Money spent on a teacher: the estimate made before anything is sent, the count kept after."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stillroom.errors import TeacherError
from stillroom.pricing import estimate_tokens
from stillroom.teachers import Completion, Message

MESSAGE_OVERHEAD = 4  # tokens a chat format adds around each message


def message_tokens(messages: Sequence[Message]) -> int:
    """Estimated input tokens of one request."""
    return sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD for m in messages)


def dollars(value: float | None) -> str:
    if value is None:
        return "cost unknown"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


@dataclass
class Spend:
    """Tokens and dollars actually spent; safe to add to from several threads. The cost is
    None once any call had no price."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, completion: Completion) -> None:
        with self._lock:
            self.calls += 1
            self.input_tokens += completion.input_tokens
            self.output_tokens += completion.output_tokens
            if self.cost_usd is not None and completion.cost_usd is not None:
                self.cost_usd += completion.cost_usd
            else:
                self.cost_usd = None

    def describe(self) -> str:
        return (
            f"{self.calls} calls, {self.input_tokens:,} input + {self.output_tokens:,} output"
            f" tokens, {dollars(self.cost_usd)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
        }


@dataclass(frozen=True)
class Plan:
    """What teaching will send, estimated from the prompts before any is sent. Costs are None
    when the model has no price in gateway.prices."""

    model: str
    label_calls: int
    synthesis_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    label_call_usd: float | None = None  # one label of a synthesized input
    synthesis_call_usd: float | None = None  # one synthesis request
    batch: int = 10  # inputs asked for per synthesis request

    def describe(self) -> str:
        calls = f"{self.label_calls} labels"
        if self.synthesis_calls:
            calls += f" and {self.synthesis_calls} synthesis requests"
        cost = dollars(self.cost_usd)
        if self.cost_usd is None:
            cost += f" (no price for {self.model} in gateway.prices; spend is not capped)"
        return (
            f"estimate: {self.model}, {calls}: ~{self.input_tokens:,} input +"
            f" ~{self.output_tokens:,} output tokens, about {cost}"
        )

    def check(self, max_cost: float) -> None:
        """Refuse, before anything is sent, a plan estimated above max_cost dollars."""
        if self.cost_usd is not None and self.cost_usd > max_cost:
            raise TeacherError(
                f"the estimated {dollars(self.cost_usd)} is above the limit of"
                f" {dollars(max_cost)}; nothing was sent (raise --max-cost or synthesize fewer)"
            )

    def next_synthesis_cost(self, made: int) -> float:
        """What one more synthesis request commits to: the request itself and labelling
        everything synthesized so far plus that batch."""
        call = self.synthesis_call_usd or 0.0
        return call + (made + self.batch) * (self.label_call_usd or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.label_calls + self.synthesis_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
        }
