"""The generative base as LoRA trains on it: its GGUF dequantized once into a Hugging Face
folder, and the chat template read from the GGUF (`service.bases` renders it).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from stillroom.errors import ModelError
from stillroom.manifest import sha256_file
from stillroom.paths import PRIVATE_DIR, private_dir

WEIGHTS = "model.safetensors"


def hf_folder(gguf: Path, cache_dir: Path) -> Path:
    """A Hugging Face folder of the dequantized GGUF, built once per GGUF content."""
    target = cache_dir / f"{gguf.stem}-{sha256_file(gguf)[:16]}"
    if target.is_dir():  # only ever created by the rename below, so always complete
        return target
    private_dir(cache_dir)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
    try:
        _write_hf_folder(gguf, scratch)
        os.chmod(scratch, PRIVATE_DIR)
        try:
            scratch.rename(target)
        except OSError:
            if not target.is_dir():  # a concurrent build that won the race is as good
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def quiet_offline_env() -> None:
    """Local files only, no progress bars or tokenizer threads (set before HF imports)."""
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("HF_HUB_DISABLE_TELEMETRY", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("TRANSFORMERS_VERBOSITY", "error"),
    ):
        os.environ.setdefault(key, value)


def _write_hf_folder(gguf: Path, folder: Path) -> None:
    if importlib.util.find_spec("unsloth") is not None:
        from stillroom.trainers.lora import import_unsloth

        import_unsloth()  # this process will train: Unsloth must load before transformers
    quiet_offline_env()
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{gguf}: transformers cannot load this GGUF ({exc})") from exc
    _fix_special_tokens(tokenizer, gguf)
    # Tied weights (embeddings and lm_head) share storage: safetensors stores each once.
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            tensors[name] = tensor.detach().contiguous()
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    config = model.config
    # A GGUF-loaded model refuses save_pretrained; its config still says "gguf" quantized.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.architectures = [type(model).__name__]
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _fix_special_tokens(tokenizer: Any, gguf: Path) -> None:
    """Take bos/eos/pad from the GGUF: transformers' GGUF loader gave SmolLM2 eos = bos."""
    keys = {"bos_token": "bos", "eos_token": "eos", "pad_token": "padding"}
    ids = [f"tokenizer.ggml.{role}_token_id" for role in keys.values()]
    fields = _metadata(gguf, "tokenizer.ggml.tokens", *ids)
    tokens = fields.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list):
        return
    for attribute, role in keys.items():
        token_id = fields.get(f"tokenizer.ggml.{role}_token_id")
        if isinstance(token_id, int) and 0 <= token_id < len(tokens):
            setattr(tokenizer, attribute, tokens[token_id])


def _metadata(gguf: Path, *keys: str) -> dict[str, Any]:
    from gguf import GGUFReader

    try:
        fields = GGUFReader(gguf).fields
    except (OSError, ValueError) as exc:
        raise ModelError(f"{gguf}: not a readable GGUF file ({exc})") from exc
    return {key: fields[key].contents() for key in keys if key in fields}


def chat_template(gguf: Path) -> str:
    """The chat template stored in the GGUF's metadata."""
    template = _metadata(gguf, "tokenizer.chat_template").get("tokenizer.chat_template")
    if not isinstance(template, str) or not template:
        raise ModelError(f"{gguf}: no tokenizer.chat_template; a chat model is needed")
    return template
