"""The encoder as GGUF: our converter, llama.cpp in embedding mode, and sentence-transformers
agreeing on the real MiniLM, token for token and to a cosine of 0.999."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from stillroom.errors import ModelError
from stillroom.service.embedding import Vocab, embed, max_tokens_of, open_encoder
from stillroom.service.encoder import Encoder, encoder_path
from stillroom.service.gguf_encoder import convert_encoder, encoder_gguf
from stillroom.trainers.classifier import train_head

# One thread: llama.cpp's OpenMP threads spin at every barrier, and on 2 cores shared with
# another busy process two threads run 10-20x slower than one.
THREADS = 1
SUBJECTS = ["The invoice", "Our café", "Zoë's résumé", "The Zürich office", "A naïve plan"]
VERBS = ["arrived on", "was moved to", "costs €1,299.50 since", "can't wait until", "ends"]
OBJECTS = ["Monday 3 March 2025", "the 2nd floor (room 4B)", "São Paulo!", "Q3/2024", "déjà vu?"]
TOPICS = {
    "money": ["the invoice", "a bank transfer", "my tax return", "the salary slip", "a refund"],
    "travel": ["the flight", "our hotel booking", "a train ticket", "the passport", "a road trip"],
    "food": ["the pasta recipe", "a birthday cake", "fresh bread", "the soup", "grilled fish"],
    "health": ["the dentist", "a flu shot", "my blood test", "the knee injury", "a new diet"],
}
FRAMES = [
    "Please sort out {} before Friday.",
    "I keep forgetting about {}.",
    "Can you remind me about {} tomorrow?",
    "Notes on {}, written quickly.",
    "Everything about {} is in this folder.",
    "Question about {}: what's next?",
]


def sentences() -> list[str]:
    """Short, accented, numbered and punctuated sentences, plus some over 256 tokens."""
    rng = random.Random(7)
    rows = [f"{s} {v} {o}" for s in SUBJECTS for v in VERBS for o in OBJECTS]
    rows += [o.upper() + " -- " + s.lower() for s in SUBJECTS for o in OBJECTS]
    rows += [text for text, _ in topic_rows()]
    words = [w for row in rows[:40] for w in row.split()]
    rows += [" ".join(rng.choice(words) for _ in range(rng.randint(150, 320))) for _ in range(12)]
    rows += ["", "ÀÉÎÕÜ Ñandú façade Straße", "tab\there\nnew line", "İstanbul 中文 테스트 [CLS] x"]
    return rows


def topic_rows() -> list[tuple[str, str]]:
    return [(f.format(t), label) for label, ts in TOPICS.items() for f in FRAMES for t in ts]


@dataclass(frozen=True)
class Converted:
    path: Path
    cache: Path
    llm: Any


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Converted]:
    """The shared MiniLM converted once, and llama.cpp holding it."""
    Encoder().encode(["warm up"])  # loading starts tqdm's monitor thread: before any leak check
    cache = tmp_path_factory.mktemp("gguf") / "encoders"
    path = encoder_gguf(encoder_path(), cache)
    llm = open_encoder(path, threads=THREADS)
    yield Converted(path, cache, llm)
    llm.close()


def cosines(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    result: NDArray[np.float32] = (a * b).sum(axis=1) / (
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    )
    return result


def test_embeddings_match_sentence_transformers(converted: Converted) -> None:
    texts = sentences()
    llm = converted.llm
    assert max_tokens_of(llm) == 256
    vocab = Vocab.of(llm)
    assert sum(len(vocab.tokenize(llm, t, 10_000)) > 256 for t in texts) >= 10
    ours = embed(llm, texts, max_tokens_of(llm))
    theirs = Encoder().encode(texts)
    assert ours.shape == theirs.shape == (len(texts), 384) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos = cosines(ours, theirs)
    assert cos.min() >= 0.999, f"cosine mean {cos.mean():.6f}, min {cos.min():.6f}"
    # A text's embedding never depends on the texts embedded beside it: serving asks one at
    # a time, calibration in bulk, and both must see the same vector.
    one_by_one = np.stack([embed(llm, [t], 256)[0] for t in texts[::25]])
    assert np.array_equal(one_by_one, ours[::25])
    assert np.array_equal(embed(llm, texts[::-1], 256)[::-1], ours)
    assert embed(llm, [], 256).shape == (0, 384)


def test_token_ids_match_the_hugging_face_tokenizer(converted: Converted) -> None:
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(encoder_path() / "tokenizer.json"))
    hf.no_padding()
    hf.enable_truncation(256)
    llm = converted.llm
    vocab = Vocab.of(llm)
    texts = [
        "Café crème brûlée costs €3.50 — naïve résumé, façade & Øresund Straße!",
        "UPPER lower MiXeD 12,345.67 and 3.14159; don't won't (ok) [x] a/b",
        "control\x00char\u200bzero\ufeffwidth\x85x tab\there \u00a0nbsp\u3000ideo",
        "中文字符 and 日本語 テキスト, 한국어 emoji 😀 ﬁ ligature İstanbul",
        "[CLS] a literal [SEP] and [cls] a[MASK]b",
        "short " + "x" * 101 + " words over a hundred characters become [UNK]",
        " ".join(["unbelievably"] * 300),
    ]
    for text in texts:
        assert vocab.tokenize(llm, text, 256) == hf.encode(text).ids, text


def test_a_head_trained_on_sentence_transformers_predicts_the_same(converted: Converted) -> None:
    rows = topic_rows()
    random.Random(3).shuffle(rows)
    train, held_out = rows[:60], rows[60:]
    head = train_head(Encoder().encode([t for t, _ in train]), [label for _, label in train])
    texts = [t for t, _ in held_out]
    theirs = head.probabilities(Encoder().encode(texts))
    ours = head.probabilities(embed(converted.llm, texts, 256))
    top = np.sort(theirs, axis=1)
    margin = float((top[:, -1] - top[:, -2]).min())
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all(), f"smallest margin {margin:.4f}"
    assert np.abs(ours - theirs).max() < 0.01


def test_conversion_is_cached_by_weights(converted: Converted, tmp_path: Path) -> None:
    before = converted.path.stat()
    assert before.st_mode & 0o777 == 0o600
    assert converted.cache.stat().st_mode & 0o777 == 0o700
    again = encoder_gguf(encoder_path(), converted.cache)
    after = again.stat()
    assert again == converted.path
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    from safetensors.numpy import load_file, save_file

    copy = tmp_path / "changed"
    shutil.copytree(encoder_path(), copy)
    tensors = load_file(str(copy / "model.safetensors"))
    tensors["pooler.dense.bias"] = tensors["pooler.dense.bias"] + 1.0  # unused, still new
    save_file(tensors, str(copy / "model.safetensors"))
    changed = encoder_gguf(copy, converted.cache)
    assert changed != converted.path and changed.is_file()
    assert sorted(p.name for p in converted.cache.iterdir()) == sorted(
        [changed.name, converted.path.name]
    )  # no temp file left behind


def test_a_fine_tuned_folder_converts_with_its_own_length(
    converted: Converted, tmp_path: Path
) -> None:
    """sentence-transformers saves a tuned copy with tokenizer.json only and max_seq_length in
    tokenizer_config.json (setfit.fine_tune keeps 128)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(encoder_path()), device="cpu")
    model.max_seq_length = 128
    folder = tmp_path / "encoder"
    model.save(str(folder), safe_serialization=True)
    del model
    target = convert_encoder(folder, tmp_path / "tuned.gguf")
    llm = open_encoder(target, threads=THREADS)
    try:
        assert max_tokens_of(llm) == 128
        texts = [*[t for t in sentences() if len(t) > 600][:4], "Zoë's résumé costs €3.50"]
        tuned = Encoder(folder)
        cos = cosines(embed(llm, texts, max_tokens_of(llm)), tuned.encode(texts))
        assert cos.min() >= 0.999, f"cosine min {cos.min():.6f}"
    finally:
        llm.close()
        with Encoder._lock:
            Encoder._models.pop(str(folder), None)


def test_a_folder_that_is_not_a_bert_sentence_encoder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a folder"):
        convert_encoder(tmp_path / "missing", tmp_path / "out.gguf")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        ModelError, match=r"not a sentence-transformers model \(config.json missing\)"
    ):
        convert_encoder(empty, tmp_path / "out.gguf")
    t5 = tmp_path / "t5"
    shutil.copytree(encoder_path(), t5)
    config = json.loads((t5 / "config.json").read_text())
    (t5 / "config.json").write_text(json.dumps(config | {"model_type": "t5"}))
    with pytest.raises(ModelError, match="not a BERT model"):
        convert_encoder(t5, tmp_path / "out.gguf")
    no_pooling = tmp_path / "no-pooling"
    shutil.copytree(encoder_path(), no_pooling)
    (no_pooling / "modules.json").write_text(json.dumps([{"path": "", "type": "x.Dense"}]))
    with pytest.raises(ModelError, match="not Transformer"):
        encoder_gguf(no_pooling, tmp_path / "cache")
    assert not (tmp_path / "out.gguf").exists()
    assert list((tmp_path / "cache").iterdir()) == []
