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

from prompt_calls import FRAMES, ticket
from upstream import ticket_oracle, user_text

SYNTH_MARK = "Reply with a JSON list"


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
