"""Greedy generation on a llama.cpp model, with each token's log-probability.

The log-probabilities are the student's confidence (its least sure token), calibrated later
like a classifier's. A JSON schema becomes a llama.cpp grammar, so structured answers always
parse. High-level `create_completion` gives log-probabilities only with logits for every
position kept (n_ctx x vocab floats); this loop reads the last position's logits instead.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from stillroom.errors import ModelError


@dataclass(frozen=True)
class Generated:
    text: str
    logprobs: list[float]  # one per generated token, the end-of-turn token included
    prompt_tokens: int
    seconds: float
    finished: bool  # it ended its turn; False when cut off at max_tokens

    @property
    def confidence(self) -> float:
        """The probability of its least sure token: one doubtful token can spoil an answer.
        An answer cut off before its end has none (its JSON would not even close)."""
        if not self.finished or not self.logprobs:
            return 0.0
        return math.exp(min(self.logprobs))


# JSON strings hold no raw control characters; llama-cpp-python's own rule lets a newline in,
# and such output fails to parse.
JSON_CHAR = (
    r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F]'
    r" [0-9a-fA-F] [0-9a-fA-F])"
)


def schema_grammar(schema: dict[str, Any]) -> str:
    """A GBNF grammar that admits exactly the JSON texts the schema describes."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    rules = str(json_schema_to_gbnf(json.dumps(schema))).splitlines()
    return "\n".join(JSON_CHAR if r.startswith("char ::=") else r for r in rules)


# The pieces a copied value is made of: runs of word characters, and single punctuation
# marks. A copied value starts and ends on their edges ("Dr." out of "Dr.,", never "Chic" out
# of "Chicago"); where the input has any whitespace between two pieces, the value has a space
# (answers are judged with whitespace collapsed).
_PIECE = re.compile(r"\w+|[^\w\s]")
# Each piece is a place a run may start, and llama.cpp follows every such start at once: past
# this many pieces an answer slows several-fold (3,500 characters of JSON, ~1,000 pieces: 5x
# on this project's machine), so longer inputs keep the schema's grammar alone.
MAX_COPY_PIECES = 256


@dataclass(frozen=True)
class Piece:
    text: str
    start: int
    end: int
    gap: str  # the whitespace before it: "" (attached), " " (space) or "\n" (a line break)


def pieces(text: str) -> list[Piece]:
    """The text's pieces (`_PIECE`), where each stands and what whitespace comes before it."""
    out: list[Piece] = []
    end = 0
    for m in _PIECE.finditer(text):
        between = text[end : m.start()]
        gap = "\n" if "\n" in between else (" " if between else "")
        out.append(Piece(m.group(), m.start(), m.end(), gap))
        end = m.end()
    return out


def _pieces(text: str) -> list[tuple[str, bool]]:
    """Each piece of the text, and whether whitespace stands before it (after the first)."""
    return [(p.text, i > 0 and bool(p.gap)) for i, p in enumerate(pieces(text))]


def is_copied(value: str, text: str) -> bool:
    """Whether `value` is made of runs of whole pieces of `text` (spaced as there), joined by
    spaces: "Memphis" or "St. TN" out of "Front St., Memphis TN" (see `_PIECE`)."""
    want, have = _pieces(value), _pieces(text)
    done = {0}  # how many of the value's pieces are matched by whole runs so far
    for i in range(len(want)):
        if i not in done:
            continue
        for at, (piece, _) in enumerate(have):
            if piece != want[i][0]:
                continue
            j = i + 1
            while j < len(want) and at + j - i < len(have) and have[at + j - i] == want[j]:
                j += 1
            # Any prefix of the run that ends before a space in the value ends a run there.
            done.update(k for k in range(i + 1, j + 1) if k == len(want) or want[k][1])
    return bool(want) and len(want) in done


def copy_grammar(grammar: str, text: str) -> str:
    """The schema's grammar with every JSON string held to runs of whole pieces of `text`
    (one, or several joined by spaces; see `is_copied`).

    For extraction whose teacher only ever copies from the input: the student cannot invent
    a value ("Lemonland" for "Leonard"), only choose where its runs start and stop. Linear in
    the input: piece k is followed by piece k+1 (with a space where the input has one), or
    its run ends. An input of no pieces or of more than MAX_COPY_PIECES keeps `grammar`.
    """
    pieces = _pieces(text)
    if not pieces or len(pieces) > MAX_COPY_PIECES:
        return grammar
    rules = [r for r in grammar.splitlines() if not r.startswith("string ::=")]
    rules.append(r'string ::= "\"" run ( " " run )* "\"" space')
    rules.append("run ::= " + " | ".join(f"piece{k}" for k in range(len(pieces))))
    for k, (piece, _) in enumerate(pieces):
        if k + 1 == len(pieces):
            rules.append(f"piece{k} ::= {_literal(piece)}")
            continue
        then = f'" " piece{k + 1}' if pieces[k + 1][1] else f"piece{k + 1}"
        rules.append(f"piece{k} ::= {_literal(piece)} ( {then} )?")
    return "\n".join(rules)


def _literal(text: str) -> str:
    """A GBNF literal matching the text as it is written inside a JSON string."""
    inside = json.dumps(text, ensure_ascii=False)[1:-1]
    return '"' + inside.replace("\\", "\\\\").replace('"', '\\"') + '"'


def generate(
    llm: Any,
    prompt: str,
    *,
    max_tokens: int = 256,
    grammar: str | None = None,
) -> Generated:
    """Greedy answer to a prompt (already in the model's chat format), until end of turn."""
    import importlib

    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    # llama-cpp-python's internals are untyped: the sampler chain is held as Any.
    internals: Any = importlib.import_module("llama_cpp._internals")

    started = time.perf_counter()
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    room = llm.n_ctx() - len(tokens)
    if room < 2:
        raise ModelError(f"the prompt takes {len(tokens)} tokens; the context holds {llm.n_ctx()}")
    max_tokens = min(max_tokens, room - 1)
    sampler = internals.LlamaSampler()
    try:
        if grammar is not None:
            sampler.add_grammar(llm._model, LlamaGrammar.from_string(grammar, verbose=False))
        sampler.add_greedy()
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        n_vocab = llm.n_vocab()
        llm.reset()
        llm.eval(tokens)
        out: list[int] = []
        logprobs: list[float] = []
        finished = False
        for _ in range(max_tokens):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
            token = int(sampler.sample(llm._ctx, -1))
            logprobs.append(_logprob(logits, token))
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finished = True
                break
            out.append(token)
            llm.eval([token])
    finally:
        sampler.close()
    text = llm.detokenize(out).decode("utf-8", errors="replace")
    seconds = time.perf_counter() - started
    return Generated(text.strip(), logprobs, len(tokens), seconds, finished)


def _logprob(logits: Any, token: int) -> float:
    """log softmax(logits)[token], computed stably."""
    top = float(logits.max())
    total = float(np.log(np.exp(logits.astype(np.float64) - top).sum())) + top
    return float(logits[token]) - total
