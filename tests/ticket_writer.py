"""An oracle for tests/upstream.py that also writes new support tickets when asked.

Asked (in stillroom's synthesis wording) for N new inputs, it answers a fenced JSON list of
tickets built from word lists with an RNG seeded by the prompt, so the same prompt gets the
same answer. Each batch carries a repeat (other case and spacing) and a near-copy of the
first example shown, which deduplication must drop. Anything else it labels as
`ticket_oracle` does, by keywords.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

from upstream import ticket_oracle, user_text

SYNTH_MARK = "Reply with a JSON list"
THINGS = [
    "my order",
    "the blue jacket",
    "the coffee machine",
    "my headphones",
    "the garden chairs",
    "my new phone case",
    "the winter boots",
    "the kitchen scale",
    "the yoga mat",
    "the desk lamp",
    "the wool blanket",
    "the camping tent",
]
FRAMES = {
    "billing": [
        "I was charged twice for {}",
        "Please refund {}, it was not what I expected",
        "The invoice for {} shows the wrong amount",
        "Why did the price of {} go up",
        "My payment for {} did not go through",
        "How do I cancel the subscription that came with {}",
        "The bill for {} is higher than we agreed",
    ],
    "shipping": [
        "Where is the parcel with {}",
        "The delivery of {} is two weeks late",
        "{} was shipped to the wrong address",
        "The courier left {} at the wrong door",
        "The tracking number for {} shows nothing",
        "The package with {} arrived damaged",
    ],
    "technical": [
        "The app will crash when I open the page for {}",
        "I get an error when I try to register {}",
        "I cannot login to see {}",
        "I forgot my password and cannot reach the page for {}",
        "There is a bug on the product page for {}",
        "The website freezes whenever I look at {}",
        "I cannot install the app that controls {}",
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
OPENINGS = ["", "Hi, ", "Hello team, ", "Urgent: ", "Good morning. "]
CLOSINGS = ["", ". Thanks", ". Please help", "?", ". This is my second message about it"]


def ticket(rng: random.Random, label: str) -> str:
    frame = rng.choice(FRAMES[label]).format(rng.choice(THINGS))
    text = rng.choice(OPENINGS) + frame[0].upper() + frame[1:] + rng.choice(CLOSINGS)
    return text if text[-1] in ".?" else text + "."


def writer_oracle(messages: list[dict[str, Any]]) -> str:
    """New tickets as a JSON list when asked to write some, else a routing label."""
    text = user_text(messages)
    if SYNTH_MARK not in text:
        return ticket_oracle(messages)
    wanted = re.search(r"Write (\d+) new inputs", text)
    count = int(wanted.group(1)) if wanted else 10
    rng = random.Random(hashlib.sha256(text.encode()).hexdigest())
    items = [ticket(rng, rng.choice(list(FRAMES))) for _ in range(count)]
    if count > 1:
        items[-1] = "  " + items[0].upper().replace(" ", "   ") + " "  # a repeat of the first
    shown = [json.loads(line[2:]) for line in text.splitlines() if line.startswith('- "')]
    if shown and count > 2:
        items[-2] = shown[0] + " pls"  # a near-copy of an example
    return "Here are the new inputs:\n```json\n" + json.dumps(items, indent=1) + "\n```"
