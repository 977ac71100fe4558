"""The model cache on real GGUF files through llama.cpp: keep-alive, LRU under a budget, pins,
explicit load/unload, and LoRA adapters swapped on a resident base."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stillroom.errors import ModelError
from stillroom.service.bases import base_gguf
from stillroom.service.encoder import encoder_path
from stillroom.service.generation import copy_grammar, generate, is_copied, schema_grammar
from stillroom.service.gguf_encoder import encoder_gguf
from stillroom.service.runtime import ADAPTER, BASE, ENCODER, ModelCache
from stillroom.trainers.gguf_lora import export_lora_gguf

LAYERS, WIDTH, KV_WIDTH = 30, 576, 192  # SmolLM2-135M: 9 heads, 3 KV heads of 64
PROMPT = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"


def _user_turn(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _peft_adapter(folder: Path, seed: int, scale: float) -> Path:
    """A random LoRA on q and v of every layer, in PEFT's files: enough to move the logits."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    rank = 4
    tensors = {}
    for layer in range(LAYERS):
        for module, out in (("q_proj", WIDTH), ("v_proj", KV_WIDTH)):
            name = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{name}.lora_A.weight"] = (rng.standard_normal((rank, WIDTH)) * 0.05).astype(
                np.float32
            )
            tensors[f"{name}.lora_B.weight"] = (rng.standard_normal((out, rank)) * scale).astype(
                np.float32
            )
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj"],
        "task_type": "CAUSAL_LM",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    base = base_gguf()
    adapters = {}
    for name, seed in (("one", 1), ("two", 2)):
        peft = _peft_adapter(root / f"peft-{name}", seed, scale=0.5)
        adapters[name] = export_lora_gguf(peft, base, root / f"{name}.gguf")
    return {"base": base, "encoder": encoder_gguf(encoder_path(), root / "cache"), **adapters}


def _logits(llm: object, prompt: str = PROMPT) -> np.ndarray:
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)  # type: ignore[attr-defined]
    llm.reset()  # type: ignore[attr-defined]
    llm.eval(tokens)  # type: ignore[attr-defined]
    n_vocab = llm.n_vocab()  # type: ignore[attr-defined]
    row = llm._ctx.get_logits_ith(-1)  # type: ignore[attr-defined]
    return np.ctypeslib.as_array(row, shape=(n_vocab,)).copy()


def test_adapters_swap_on_one_resident_base(models: dict[str, Path]) -> None:
    cache = ModelCache(budget_bytes=2 << 30)
    try:
        plain = _logits(cache.generator(models["base"]))
        one = _logits(cache.generator(models["base"], models["one"]))
        two = _logits(cache.generator(models["base"], models["two"]))
        again = _logits(cache.generator(models["base"]))
        # Each adapter changes what the model says; taking it off gives the base back exactly.
        assert np.abs(one - plain).mean() > 0.05
        assert np.abs(two - one).mean() > 0.05
        np.testing.assert_allclose(again, plain, rtol=0, atol=1e-4)
        one_again = _logits(cache.generator(models["base"], models["one"]))
        np.testing.assert_allclose(one_again, one, rtol=0, atol=1e-4)
        # One base load for all of it; the adapters loaded once each and swapped.
        kinds = [m["kind"] for m in cache.describe()["models"]]
        assert kinds.count(BASE) == 1 and kinds.count(ADAPTER) == 2
        assert cache.stats.loads == 3
        assert cache.stats.swaps == 4
    finally:
        cache.close()


def test_keep_alive_unloads_idle_models_but_not_pinned_ones(models: dict[str, Path]) -> None:
    clock = Clock()
    cache = ModelCache(budget_bytes=2 << 30, keep_alive=60, clock=clock)
    try:
        cache.encoder(models["encoder"])
        cache.pin(models["base"])
        cache.generator(models["base"], models["one"])
        clock.now += 30
        assert cache.expire() == 0
        cache.encoder(models["encoder"])  # a hit keeps it alive
        assert cache.stats.hits == 1
        clock.now += 45
        # The adapter was idle 75 s: it goes; the encoder was used 45 s ago; the base is pinned.
        assert cache.expire() == 1
        assert set(cache.loaded()) == {str(models["encoder"]), str(models["base"])}
        clock.now += 61
        assert cache.expire() == 1
        assert cache.loaded() == [str(models["base"])]
        cache.unpin(models["base"])
        clock.now += 61
        assert cache.expire() == 1 and cache.loaded() == []
    finally:
        cache.close()


def test_least_recently_used_goes_first_under_the_budget(models: dict[str, Path]) -> None:
    clock = Clock()
    encoder_size = models["encoder"].stat().st_size
    # Room for the encoder or the base (with its context), not both.
    cache = ModelCache(budget_bytes=int(models["base"].stat().st_size * 1.7), clock=clock)
    try:
        cache.encoder(models["encoder"])
        clock.now += 1
        cache.generator(models["base"])
        assert cache.loaded() == [str(models["base"])], "the encoder was least recently used"
        assert cache.stats.evictions == 1
        cache.pin(models["base"])
        clock.now += 1
        cache.encoder(models["encoder"])  # over budget: nothing unpinned to evict, so it stays
        assert set(cache.loaded()) == {str(models["base"]), str(models["encoder"])}
        assert cache.used > cache.budget >= encoder_size
    finally:
        cache.close()


def test_explicit_load_and_unload(models: dict[str, Path]) -> None:
    cache = ModelCache()
    try:
        entry = cache.load(models["one"], ADAPTER, base=models["base"])
        assert entry.load_ms > 0 and entry.base == str(models["base"])
        assert cache.load(models["encoder"], ENCODER).kind == ENCODER
        with pytest.raises(ModelError, match="not as a base"):
            cache.generator(models["encoder"])
        with pytest.raises(ModelError, match="name the base"):
            cache.load(models["two"], ADAPTER)
        # Unloading the base takes its adapter with it.
        assert cache.unload(models["base"])
        assert cache.loaded() == [str(models["encoder"])]
        assert not cache.unload(models["base"])
    finally:
        cache.close()


def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    cache = ModelCache()
    with pytest.raises(ModelError, match=r"junk\.gguf"):
        cache.generator(junk)
    with pytest.raises(ModelError, match=r"missing\.gguf"):
        cache.encoder(tmp_path / "missing.gguf")


def test_json_schema_grammar_always_parses(models: dict[str, Path]) -> None:
    cache = ModelCache()
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "zip": {"type": "string", "maxLength": 10},
        },
        "required": ["city", "zip"],
        "additionalProperties": False,
    }
    grammar = schema_grammar(schema)
    prompts = [
        "Where is the Eiffel tower? Answer with its city and zip code.",
        "Tell me a joke about cats.",
        "Write a haiku.",
    ]
    try:
        llm = cache.generator(models["base"])
        for text in prompts:
            out = generate(llm, _user_turn(text), max_tokens=120, grammar=grammar)
            assert out.finished
            data = json.loads(out.text)
            assert set(data) == {"city", "zip"}
            assert all(isinstance(v, str) for v in data.values())
            assert 0 < out.confidence <= 1 and len(out.logprobs) >= 4
    finally:
        cache.close()


def test_copy_grammar_holds_every_string_to_runs_of_the_input(models: dict[str, Path]) -> None:
    """Untrained for it, the base model may still only copy: every value it writes stands in
    its input as whole pieces, quotes and backslashes included."""
    cache = ModelCache()
    schema = {"type": "array", "items": {"type": "string"}}
    texts = [
        'Team: [{"name": "Zoë O\'Neil"}, {"name": "Ravi \\"Ray\\" Shah"}]',
        "Invite Ada Lovelace, Grace Hopper and Edsger Dijkstra to the review.",
        "Chicago, IL 60637 / path C:\\temp\\x",
    ]
    found: list[str] = []
    try:
        llm = cache.generator(models["base"])
        for text in texts:
            prompt = _user_turn(f"List the first names in: {text}")
            grammar = copy_grammar(schema_grammar(schema), text)
            out = generate(llm, prompt, max_tokens=80, grammar=grammar)
            assert out.finished
            data = json.loads(out.text)
            assert isinstance(data, list)
            assert all(is_copied(v, text) for v in data), (text, data)
            found += data
    finally:
        cache.close()
    assert found, "it wrote no value at all: nothing was checked"
    assert is_copied("Chicago", "Chicago, IL") and not is_copied("Chic", "Chicago, IL")
    assert is_copied("Fl.", "431 Marietta St NW Fl. 3") and is_copied("St NW", "Marietta St NW Fl")
    assert is_copied("Dr.", "111 E Wacker Dr., Chicago") and not is_copied(
        "Dr.Chicago", "Dr., Chicago"
    )
    # Line breaks in the input count as a space (answers are judged with whitespace collapsed).
    assert is_copied("TRAVEL MICHAEL A", "CORPORATE TRAVEL\n MICHAEL A") and not is_copied("", "x")
    plain = schema_grammar({"type": "array", "items": {"type": "string"}})
    assert copy_grammar(plain, "Ada Bo " * 100) != plain
    assert copy_grammar(plain, "Ada Bo " * 200) == plain, "too long to follow every start"
    # Runs from apart, joined by a space (the teacher labelled both "St." and "TN" one field).
    assert is_copied("St. TN", "Fifty N. Front St., Memphis TN, TN 38103")
    assert not is_copied("St.TN", "Front St., Memphis TN") and not is_copied("St. NY", "St., TN")
