"""A generative student end to end: an Unsloth LoRA on the real SmolLM2, exported to GGUF and
served by llama.cpp over the Q4_1 base, answering as the PEFT model does."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from stillroom.errors import ModelError
from stillroom.service.bases import DEFAULT_BASE, END_OF_TURN, base_gguf, end_of_turn, render_prompt
from stillroom.trainers.base_model import chat_template, hf_folder
from stillroom.trainers.gguf_lora import export_lora_gguf, permute_qk_rows
from stillroom.trainers.lora import LoraResult, LoraSettings, planned_steps, train_lora

INSTRUCTION = "Return the first names as a JSON list."
FIRST = [
    *("Ada", "Bo", "Cyril", "Dana", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kaya"),
    *("Liam", "Mina", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vera"),
    *("Wim", "Xena", "Yusuf", "Zoe"),
]
LAST = ["Smith", "Okafor", "Novak", "Larsen", "Silva", "Tanaka", "Moreau", "Kowalski", "Haddad"]
CITIES = ["Oslo", "Lima", "Porto", "Kyoto", "Accra", "Quito", "Lyon", "Graz", "Perth", "Turin"]
TRAIN, HELD_OUT = 48, 8
MAX_NEW_TOKENS = 24  # four names in a JSON list take under 20 tokens


def people(rng: random.Random) -> tuple[str, str, str]:
    """(instruction, input, output): 1-4 people as JSON and their first names in order."""
    crowd = [
        {
            "first": f,
            "last": rng.choice(LAST),
            "age": rng.randint(18, 90),
            "city": rng.choice(CITIES),
        }
        for f in rng.sample(FIRST, rng.randint(1, 4))
    ]
    return INSTRUCTION, json.dumps(crowd), json.dumps([p["first"] for p in crowd])


def adapter(folder: Path, tensors: dict[str, np.ndarray], **config: Any) -> Path:
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    settings = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(settings | config))
    return folder


def q_pair(layer: int = 0, width: int = 576, out: int = 576) -> dict[str, np.ndarray]:
    name = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
    rng = np.random.default_rng(layer)
    return {
        f"{name}.lora_A.weight": rng.standard_normal((2, width)).astype(np.float32),
        f"{name}.lora_B.weight": rng.standard_normal((out, 2)).astype(np.float32),
    }


# -- fast: the prompt and the exporter's checks -----------------------------------------------


def test_smollm2_prompt_is_chatml_with_the_instruction_as_system() -> None:
    template = chat_template(base_gguf(DEFAULT_BASE))
    prompt = render_prompt(template, "Be brief.", '{"a": 1}')
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        '<|im_start|>user\n{"a": 1}<|im_end|>\n'
        "<|im_start|>assistant\n"
    )
    assert end_of_turn(template) == END_OF_TURN == "<|im_end|>"


def test_only_gguf_bases_can_be_served(tmp_path: Path) -> None:
    assert base_gguf().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with pytest.raises(ModelError, match=r"needs a \.gguf file"):
        base_gguf("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ModelError, match="no such GGUF"):
        base_gguf(str(tmp_path / "missing.gguf"))


def test_exporter_refuses_adapters_that_do_not_fit_the_base(tmp_path: Path) -> None:
    base = base_gguf()
    bad = {
        "layer 30 of 30": adapter(tmp_path / "deep", q_pair(layer=30)),
        "wider than q": adapter(tmp_path / "wide", q_pair(width=600)),
        "an embedding": adapter(tmp_path / "embed", q_pair(), target_modules=["embed_tokens"]),
        "DoRA": adapter(tmp_path / "dora", q_pair(), use_dora=True),
    }
    for why, folder in bad.items():
        with pytest.raises(ModelError):
            export_lora_gguf(folder, base, tmp_path / "out.gguf")
        assert not (tmp_path / "out.gguf").exists(), why
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in bad.values())

    good = export_lora_gguf(adapter(tmp_path / "good", q_pair()), base, tmp_path / "q.gguf")
    assert good.stat().st_mode & 0o777 == 0o600
    from gguf import GGUFReader

    reader = GGUFReader(good)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 4.0
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    assert shapes == {
        "blk.0.attn_q.weight.lora_a": [576, 2],
        "blk.0.attn_q.weight.lora_b": [2, 576],
    }


# -- slow: a real Unsloth run ----------------------------------------------------------------


@dataclass
class Answers:
    """Greedy answers and last-position logits of one model on the held-out prompts."""

    texts: list[str] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class Trained:
    result: LoraResult
    held_out: list[tuple[str, str, str]]
    hf_folder: Path
    build_seconds: float
    peft: Answers
    base: Answers
    llama: Answers
    adapter_gguf: Path


def hf_answers(model: Any, tokenizer: Any, prompts: list[str], stop: int) -> Answers:
    import torch

    answers = Answers()
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            answers.logits.append(model(ids).logits[0, -1].float().numpy())
            out = model.generate(
                ids,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                eos_token_id=stop,
                pad_token_id=stop,
            )
        answers.texts.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return answers


def llama_answers(base: Path, lora: Path, prompts: list[str]) -> Answers:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(base), lora_path=str(lora), n_ctx=512, logits_all=True, verbose=False
    )
    answers = Answers()
    try:
        for prompt in prompts:
            tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
            llm.reset()
            llm.eval(tokens)
            answers.logits.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32))
            done = llm.create_completion(
                prompt, max_tokens=MAX_NEW_TOKENS, temperature=0.0, stop=[END_OF_TURN]
            )
            answers.texts.append(done["choices"][0]["text"])  # type: ignore[index]
    finally:
        llm.close()
    return answers


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("lora")
    rng = random.Random(0)
    train = [people(rng) for _ in range(TRAIN)]
    rng = random.Random(1)
    held_out = [e for e in (people(rng) for _ in range(3 * HELD_OUT)) if e not in train][:HELD_OUT]
    gguf = base_gguf()
    template = chat_template(gguf)
    started = time.monotonic()
    folder = hf_folder(gguf, root / "cache")
    build_seconds = time.monotonic() - started
    settings = LoraSettings(max_steps=24)
    result = train_lora(folder, train, root / "adapter", settings, template)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(folder), root / "adapter"
    )
    model.eval()
    stop = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    prompts = [render_prompt(template, *example[:2]) for example in held_out]
    peft = hf_answers(model, tokenizer, prompts, stop)
    with model.disable_adapter():
        base = hf_answers(model, tokenizer, prompts, stop)
    lora = export_lora_gguf(root / "adapter", gguf, root / "adapter.gguf")
    llama = llama_answers(gguf, lora, prompts)
    return Trained(result, held_out, folder, build_seconds, peft, base, llama, lora)


def report(trained: Trained) -> str:
    r = trained.result
    return (
        f"hf folder {trained.build_seconds:.0f}s; {r.steps} steps in {r.seconds:.0f}s on {r.device}"
        f" ({r.seconds / r.steps:.1f}s/step), loss {r.mean_loss:.3f} -> {r.final_loss:.3f}; "
        f"peft {trained.peft.texts}; llama.cpp {trained.llama.texts}; base {trained.base.texts}"
    )


@pytest.mark.slow
@pytest.mark.timeout(900)  # one shared run: ~2.5 min alone, far more on a busy 2-core machine
def test_unsloth_lora_learns_the_task(trained: Trained) -> None:
    r = trained.result
    assert r.device in ("cpu", "cuda") and r.examples == TRAIN
    assert r.steps == TRAIN // 4 * 2
    assert r.final_loss < 0.5 * r.mean_loss, report(trained)
    files = sorted(p.name for p in r.adapter_dir.iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    cache = trained.hf_folder.parent
    assert hf_folder(base_gguf(), cache) == trained.hf_folder  # built once, then reused
    assert [p.name for p in cache.iterdir()] == [trained.hf_folder.name]  # no scratch left
    assert trained.hf_folder.stat().st_mode & 0o777 == 0o700

    wanted = [output for _, _, output in trained.held_out]
    right = sum(a == w for a, w in zip(trained.peft.texts, wanted, strict=True))
    base_right = sum(a == w for a, w in zip(trained.base.texts, wanted, strict=True))
    # Measured: 20/20 right on 20 held-out inputs after these 24 steps, 0/20 for the base.
    assert right >= HELD_OUT // 2 and right > base_right, report(trained)
    changed = sum(a != b for a, b in zip(trained.peft.texts, trained.base.texts, strict=True))
    assert changed >= HELD_OUT - 1, report(trained)
    moved = [
        np.abs(a - b).mean() for a, b in zip(trained.peft.logits, trained.base.logits, strict=True)
    ]
    assert min(moved) > 2.0, moved  # measured 9.6-12 per vocabulary entry


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_llama_cpp_serves_the_exported_adapter_as_peft_runs_it(trained: Trained) -> None:
    correlations = [
        float(np.corrcoef(a, b)[0, 1])
        for a, b in zip(trained.peft.logits, trained.llama.logits, strict=True)
    ]
    assert min(correlations) >= 0.99, correlations
    first = [int(a.argmax()) for a in trained.peft.logits]
    assert first == [int(b.argmax()) for b in trained.llama.logits]
    # Q4_1 with Q8 activations against float32: allow one late near-tie to differ.
    same = sum(a == b for a, b in zip(trained.peft.texts, trained.llama.texts, strict=True))
    assert same >= HELD_OUT - 1, report(trained)
    assert trained.adapter_gguf.stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_q_rows_are_permuted_as_llama_cpp_stores_them(trained: Trained) -> None:
    """The exporter's q/k permutation turns the HF weights back into the GGUF's own."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import load_file

    hf = load_file(str(trained.hf_folder / "model.safetensors"))
    stored = {t.name: t for t in GGUFReader(base_gguf()).tensors}
    for hf_name, gguf_name, heads in (
        ("model.layers.3.self_attn.q_proj.weight", "blk.3.attn_q.weight", 9),
        ("model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight", 3),
    ):
        tensor = stored[gguf_name]
        native = dequantize(tensor.data, tensor.tensor_type)
        assert not np.allclose(hf[hf_name], native)  # the two layouts do differ
        np.testing.assert_allclose(permute_qk_rows(hf[hf_name], heads), native, atol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_spent_time_budget_stops_after_one_step(trained: Trained, tmp_path: Path) -> None:
    examples = [people(random.Random(seed)) for seed in range(8)]
    template = chat_template(base_gguf())
    settings = LoraSettings(max_seconds=0.0)
    result = train_lora(trained.hf_folder, examples, tmp_path / "adapter", settings, template)
    assert result.steps == 1 and result.examples == 8
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_planned_steps_cover_the_epochs_with_a_floor_for_small_sets() -> None:
    settings = LoraSettings(epochs=5, batch_size=4, min_steps=60)
    assert planned_steps(400, settings) == 500  # 100 batches an epoch, 5 epochs
    assert planned_steps(30, settings) == 60  # 8 batches an epoch: the floor
    assert planned_steps(30, LoraSettings(epochs=5, batch_size=4, min_steps=0)) == 40
    assert planned_steps(30, LoraSettings(max_steps=7)) == 7
