"""The sentence encoder without torch: the GGUF from `service.gguf_encoder` run by llama.cpp.

Texts are normalised and split the way the Hugging Face BERT tokenizer does it before
llama.cpp's WordPiece sees them, so the ids (and the embeddings, to ~1e-5) match
sentence-transformers'. A Llama object is not thread-safe: callers serialise their calls.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stillroom.errors import ModelError
from stillroom.service.gguf_encoder import (
    KEY_MAX_SEQ_LENGTH,
    KEY_MAX_WORD_CHARS,
    KEY_SPECIAL_TOKENS,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

CONTEXT = 512  # the most tokens one llama.cpp call takes (one text of up to 512 tokens)
WINDOW = 4096  # characters normalised and tokenized at a time
# BERT's whitespace (Unicode White_Space less the control characters dropped before).
WHITESPACE = frozenset(" \t\n\r\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)
# The same for ASCII: tab, newline and return become spaces, other control codes go.
ASCII_CLEAN = {c: None for c in [*range(32), 127]} | {9: " ", 10: " ", 13: " "}


def open_encoder(path: Path, threads: int | None = None) -> Any:
    """A llama.cpp model in embedding mode with mean pooling for an encoder GGUF."""
    import llama_cpp

    try:
        return llama_cpp.Llama(
            model_path=str(path),
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=CONTEXT,
            n_batch=CONTEXT,
            n_ubatch=CONTEXT,  # an encoder sees a whole batch at once: ubatch = batch
            n_threads=threads,
            n_threads_batch=threads,  # encoding always runs on the batch threads
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: llama.cpp cannot load this encoder ({exc})") from exc


def max_tokens_of(llm: Any) -> int:
    """The source model's max_seq_length, as its converter recorded it."""
    metadata: dict[str, str] = llm.metadata
    value = metadata.get(KEY_MAX_SEQ_LENGTH) or metadata.get("bert.context_length")
    if value is None:
        raise ModelError("this GGUF is not a stillroom encoder (no max_seq_length)")
    return int(value)


def embed(llm: Any, texts: Sequence[str], max_tokens: int) -> NDArray[np.float32]:
    """One unit-length float32 row per text, each cut to `max_tokens` tokens ([CLS], [SEP]
    included), as sentence-transformers truncates."""
    import llama_cpp

    dim = int(llm.n_embd())
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    # A non-causal encoder must see each call's tokens in one micro-batch.
    capacity = int(llama_cpp.llama_n_ubatch(llm.ctx))
    limit = max(2, min(int(max_tokens), capacity, int(llm.n_ctx())))
    vocab = Vocab.of(llm)
    ids = [vocab.tokenize(llm, text, limit) for text in texts]
    rows = np.zeros((len(ids), dim), dtype=np.float32)
    batch = llama_cpp.llama_batch_init(capacity, 0, 1)
    try:
        # One text per call. Packed beside others, a text's embedding moved by up to 1e-4
        # (llama.cpp's kernels follow the batch's shape): an answer would depend on what was
        # asked with it, and a student calibrated in bulk would not be the one that answers
        # the gateway's single inputs. Packing saved about a fifth of the time on 1 thread.
        for index, tokens in enumerate(ids):
            rows[index] = _encode(llm, batch, tokens, dim)
    finally:
        llama_cpp.llama_batch_free(batch)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: NDArray[np.float32] = (rows / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


@dataclass(frozen=True)
class Vocab:
    """What tokenizing needs beyond llama.cpp's WordPiece: the special ids, the special
    tokens to find in raw text, and WordPiece's longest word."""

    cls: int
    sep: int
    unk: int
    specials: dict[str, int]
    pattern: re.Pattern[str] | None
    max_word_chars: int

    @classmethod
    def of(cls, llm: Any) -> Vocab:
        metadata: dict[str, str] = llm.metadata
        try:
            specials = {str(k): int(v) for k, v in json.loads(metadata[KEY_SPECIAL_TOKENS]).items()}
            names = sorted(specials, key=len, reverse=True)
            return cls(
                cls=int(metadata["tokenizer.ggml.bos_token_id"]),
                sep=int(metadata["tokenizer.ggml.seperator_token_id"]),
                unk=int(metadata["tokenizer.ggml.unknown_token_id"]),
                specials=specials,
                pattern=re.compile("|".join(map(re.escape, names))) if names else None,
                max_word_chars=int(metadata.get(KEY_MAX_WORD_CHARS, 100)),
            )
        except (KeyError, ValueError) as exc:
            raise ModelError(f"not an encoder GGUF written by stillroom (no {exc})") from exc

    def tokenize(self, llm: Any, text: str, max_tokens: int) -> list[int]:
        """[CLS] + the text's WordPiece ids + [SEP], at most `max_tokens` ids in all."""
        body: list[int] = []
        for window in _windows(text):
            for piece, special in self._split_specials(window):
                if special is not None:
                    body.append(special)
                    continue
                for chunk, long_word in _split_long_words(normalize(piece), self.max_word_chars):
                    if long_word:
                        body.append(self.unk)  # WordPiece gives up on a word this long
                    elif chunk.strip():
                        body += llm.tokenize(chunk.encode("utf-8"), add_bos=False, special=False)
            if len(body) >= max_tokens:
                break
        return [self.cls, *body[: max_tokens - 2], self.sep]

    def _split_specials(self, text: str) -> Iterator[tuple[str, int | None]]:
        # HF finds special tokens in the raw text, before normalising ("[CLS]" is one id,
        # "[cls]" is not); llama.cpp's own special parsing would only see lowercased text.
        if self.pattern is None:
            yield text, None
            return
        start = 0
        for match in self.pattern.finditer(text):
            if match.start() > start:
                yield text[start : match.start()], None
            yield match.group(), self.specials[match.group()]
            start = match.end()
        if start < len(text):
            yield text[start:], None


def normalize(text: str) -> str:
    """BertNormalizer for uncased models: drop control characters, unify whitespace, pad
    CJK characters, strip accents (NFD, no Mn), lowercase."""
    if text.isascii():
        return text.translate(ASCII_CLEAN).lower()
    out: list[str] = []
    for char in text:
        code = ord(char)
        if code == 0 or code == 0xFFFD:
            continue
        if char in WHITESPACE:
            out.append(" ")
        elif unicodedata.category(char).startswith("C"):
            continue
        elif _is_cjk(code):
            out += [" ", char, " "]
        else:
            out.append(char)
    decomposed = unicodedata.normalize("NFD", "".join(out))
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn").lower()


def _windows(text: str, size: int = WINDOW) -> Iterator[str]:
    # Cut long texts after a whitespace character, a boundary for words and special tokens
    # alike, so a 1 MB text stops being tokenized once the first max_tokens are there.
    start = 0
    while len(text) - start > size:
        cut = next((i + 1 for i in range(start + size, len(text)) if text[i] in WHITESPACE), None)
        if cut is None:
            break
        yield text[start:cut]
        start = cut
    yield text[start:]


def _split_long_words(text: str, max_chars: int) -> Iterator[tuple[str, bool]]:
    """Pieces of normalised text, True for a word (between whitespace and punctuation)
    longer than `max_chars`."""
    if len(text) <= max_chars or not re.search(f"[^ ]{{{max_chars + 1}}}", text):
        yield text, False
        return
    start = word = 0
    for index, char in enumerate([*text, " "]):
        if char == " " or _is_punctuation(char):
            if index - word > max_chars:
                if word > start:
                    yield text[start:word], False
                yield text[word:index], True
                start = index
            word = index + 1
    if start < len(text):
        yield text[start:], False


def _is_punctuation(char: str) -> bool:
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P") or _is_cjk(code)


def _is_cjk(code: int) -> bool:
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def _encode(llm: Any, batch: Any, tokens: list[int], dim: int) -> NDArray[np.float32]:
    """The mean-pooled embedding of one text's token ids."""
    import llama_cpp

    for position, token in enumerate(tokens):
        batch.token[position] = token
        batch.pos[position] = position
        batch.n_seq_id[position] = 1
        batch.seq_id[position][0] = 0
        batch.logits[position] = True  # embedding mode wants every token marked as an output
    batch.n_tokens = len(tokens)
    # An encoder keeps no cache between calls; positions restart at 0 for every text.
    if llama_cpp.llama_encode(llm.ctx, batch) != 0:
        raise ModelError("llama.cpp failed to encode a text")
    pointer = llama_cpp.llama_get_embeddings_seq(llm.ctx, 0)
    if not pointer:
        raise ModelError("llama.cpp returned no pooled embedding (is pooling MEAN?)")
    return np.ctypeslib.as_array(pointer, shape=(dim,)).copy()
