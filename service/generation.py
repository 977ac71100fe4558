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


# The pieces a copied value is made of: runs of word characters, runs of punctuation. A copied
# value starts and ends on their edges, so "Chicago" comes out of "Chicago," but "Chic" cannot.
_PIECE = re.compile(r"\w+|[^\w\s]+")


def is_span(value: str, text: str) -> bool:
    """Whether `value` stands in `text` as a run of whole pieces (see `_PIECE`)."""
    pieces = list(_PIECE.finditer(value))
    if not pieces or pieces[0].start() != 0 or pieces[-1].end() != len(value):
        return False
    starts = {m.start() for m in _PIECE.finditer(text)}
    ends = {m.end() for m in _PIECE.finditer(text)}
    at = text.find(value)
    while at >= 0:
        if at in starts and at + len(value) in ends:
            return True
        at = text.find(value, at + 1)
    return False


def copy_grammar(grammar: str, text: str) -> str:
    """The schema's grammar with every JSON string held to a run of whole pieces of `text`.

    For extraction whose teacher only ever copies from the input: the student cannot invent
    a value ("Lemonland" for "Leonard"), only choose where a value starts and stops. Written
    in linear size: piece k is followed by its gap and piece k+1, or the string ends.
    """
    pieces = list(_PIECE.finditer(text))
    if not pieces:
        return grammar
    rules = [r for r in grammar.splitlines() if not r.startswith("string ::=")]
    rules.append(r'string ::= "\"" copied "\"" space')
    rules.append("copied ::= " + " | ".join(f"piece{k}" for k in range(len(pieces))))
    for k, piece in enumerate(pieces):
        if k + 1 == len(pieces):
            rules.append(f"piece{k} ::= {_literal(piece.group())}")
            continue
        gap = text[piece.end() : pieces[k + 1].start()]
        then = f"{_literal(gap)} piece{k + 1}" if gap else f"piece{k + 1}"
        rules.append(f"piece{k} ::= {_literal(piece.group())} ( {then} )?")
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
