"""Support-ticket calls for the prompt-task tests: one routing instruction in paraphrases,
tickets built from word lists with a seeded RNG, labelled by tests/upstream.py's oracle."""

from __future__ import annotations

import random
import time
from typing import Any

from upstream import MODEL, ticket_oracle

from stillroom.events import Event, LLMCallPayload
from stillroom.store import Store

# Paraphrases of one instruction. MiniLM must find them close (the detector clusters them).
INSTRUCTIONS = [
    "Which team should handle this support ticket?",
    "Which team should handle the following support ticket?",
    "Which team should deal with this support ticket?",
    "Tell me which team should handle this support ticket.",
]
# The same task, asked through the system message (the user message is all ticket).
SYSTEM = "Route each support ticket to the team that should handle it."

THINGS = [
    "my order", "the blue jacket", "the coffee machine", "my headphones", "the garden chairs",
    "my new phone case", "the winter boots", "the kitchen scale", "the yoga mat",
    "the desk lamp", "the wool blanket", "the camping tent", "the rain coat", "my laptop bag",
]  # fmt: skip
FRAMES = {
    "billing": [
        "I was charged twice for {}",
        "Please refund {} as soon as possible",
        "The invoice for {} shows the wrong amount",
        "My payment for {} did not go through",
        "The subscription that came with {} was billed again",
        "The price I paid for {} was higher than the advert said",
    ],
    "shipping": [
        "The parcel with {} never arrived",
        "The delivery of {} is two weeks late",
        "{} was shipped to my old address",
        "The courier left {} at the wrong door",
        "The tracking page for {} shows nothing",
        "The package with {} arrived crushed",
    ],
    "technical": [
        "The app will crash when I open the page for {}",
        "I get an error when I try to register {}",
        "I cannot login to see {}",
        "I forgot my password and cannot reach the page for {}",
        "There is a bug on the product page for {}",
        "The website freezes whenever I look at {}",
    ],
    "other": [
        "Do you have {} in other colours",
        "Can I pick up {} in a store near me",
        "I just want to say thanks for {}",
        "Is {} suitable for children",
        "Can you recommend something similar to {}",
        "Will {} be on sale again next month",
    ],
}
OPENINGS = ["", "Hi, ", "Hello team, ", "Good morning. ", "Dear support, "]
CLOSINGS = ["", ". Thanks", ". Please help", ". This is my second message about it", "!"]


def ticket(rng: random.Random, label: str | None = None) -> str:
    """A new ticket; `label` picks its team (the oracle will agree), else any team."""
    label = label or rng.choice(sorted(FRAMES))
    frame = rng.choice(FRAMES[label]).format(rng.choice(THINGS))
    text = rng.choice(OPENINGS) + frame[0].upper() + frame[1:] + rng.choice(CLOSINGS)
    return text if text[-1] in ".?!" else text + "."


def mixed(rng: random.Random) -> str:
    """A ticket about two teams' problems at once (the oracle picks by its word order)."""
    first, second = rng.sample(sorted(set(FRAMES) - {"other"}), 2)
    one = rng.choice(FRAMES[first]).format(rng.choice(THINGS))
    two = rng.choice(FRAMES[second]).format(rng.choice(THINGS))
    return f"{rng.choice(OPENINGS)}{one[0].upper()}{one[1:]} and {two[0].lower()}{two[1:]}."


def tickets(count: int, seed: int = 0, mixed_every: int = 0) -> list[str]:
    """`count` distinct tickets, the teams in turn; every `mixed_every`-th about two teams."""
    rng, found = random.Random(seed), dict[str, None]()
    teams = sorted(FRAMES)
    while len(found) < count:
        n = len(found)
        two = mixed_every and n % mixed_every == mixed_every - 1
        found[mixed(rng) if two else ticket(rng, teams[n % len(teams)])] = None
    return list(found)


def messages(text: str, n: int = 0, system: bool = False) -> list[dict[str, Any]]:
    """The call a client makes about one ticket: the n-th paraphrase, or the system form."""
    if system:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    return [{"role": "user", "content": f"{INSTRUCTIONS[n % len(INSTRUCTIONS)]}\n\n{text}"}]


def answer(said: list[dict[str, Any]]) -> str:
    """What the teacher writes: the oracle's team, capitalised with a full stop."""
    return ticket_oracle(said).capitalize() + "."


def record_calls(
    store: Store, texts: list[str], days: int = 2, model: str = MODEL, system_every: int = 0
) -> list[int]:
    """Store llm.call events as the gateway records them, spread over `days` days."""
    now, events = time.time(), []
    for n, text in enumerate(texts):
        said = messages(text, n, system=bool(system_every) and n % system_every == 0)
        body = {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer(said)}}]
        }
        payload = LLMCallPayload(
            model=model,
            messages=said,
            response=body,
            latency_ms=300.0 + n % 7,
            prompt_tokens=40,
            completion_tokens=2,
        )
        at = now - 86400 * (n % days) - 60
        events.append(Event(source="llm", kind="llm.call", payload=payload, at=at))
    return store.add_events(events)
