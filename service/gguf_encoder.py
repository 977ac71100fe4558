"""Convert a sentence-transformers BERT encoder (MiniLM, or a SetFit-tuned copy) to a GGUF
that llama.cpp runs as an embedding model with mean pooling, so serving needs no torch.

Our own converter: numpy, `safetensors.numpy` and the `gguf` package's writer. Matrices
are stored as f16, everything llama.cpp reads as f32 (norms, biases, the position and
token-type tables) as f32.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.errors import ModelError
from stillroom.manifest import sha256_file
from stillroom.paths import private_dir

CONVERTER_VERSION = 1
KEY_CONVERTER = "stillroom.converter_version"
KEY_MAX_SEQ_LENGTH = "stillroom.max_seq_length"
KEY_SPECIAL_TOKENS = "stillroom.special_tokens"  # JSON {text: id}: matched in raw input
KEY_MAX_WORD_CHARS = "stillroom.max_word_chars"  # longer words become [UNK], as in WordPiece
WEIGHTS = "model.safetensors"
SPECIAL_NAMES = {
    "cls": "[CLS]",
    "sep": "[SEP]",
    "unk": "[UNK]",
    "pad": "[PAD]",
    "mask": "[MASK]",
}

# HF BertModel name (after the layer prefix) -> llama.cpp BERT tensor name.
EMBEDDING_TENSORS = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
LAYER_TENSORS = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
IGNORED = ("embeddings.position_ids", "pooler.", "cls.")  # not used for embeddings
# llama.cpp reads these with get_rows/add in f32 (its own converter keeps them f32 too).
F32_TABLES = {"position_embd.weight", "token_types.weight"}


@dataclass(frozen=True)
class Tokenizer:
    """The WordPiece vocabulary and the normaliser settings of a BERT tokenizer."""

    tokens: list[str]
    specials: dict[str, int]  # role ("cls", "sep", ...) -> id
    control: frozenset[int]  # ids of every special token
    lowercase: bool
    strip_accents: bool
    max_word_chars: int


def convert_encoder(source: Path, target: Path) -> Path:
    """Write the encoder at `source` as a GGUF file at `target` (atomically, mode 0600)."""
    source = Path(source)
    config = _bert_config(source)
    max_seq = _max_seq_length(source, config)
    _check_modules(source)
    tokenizer = _tokenizer(source)
    if not (tokenizer.lowercase and tokenizer.strip_accents):
        # llama.cpp's WordPiece tokenizer lowercases and strips accents from every input: a
        # cased model would see other ids than it was trained on.
        raise ModelError(f"{source}: a cased BERT tokenizer cannot run in llama.cpp")
    tensors = _load_tensors(source)

    import gguf

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(temp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
        _write_header(writer, gguf, source, config, max_seq)
        _write_vocab(writer, gguf, tokenizer, config)
        for name, array in _gguf_tensors(tensors, int(config["num_hidden_layers"])):
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(temp, 0o600)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def encoder_gguf(source: Path, cache_dir: Path) -> Path:
    """The GGUF for the encoder at `source`, converted once into `cache_dir` and reused."""
    weights = Path(source) / WEIGHTS
    try:
        digest = sha256_file(weights)
    except OSError as exc:
        raise ModelError(f"{source}: cannot read {WEIGHTS} ({exc})") from exc
    target = private_dir(Path(cache_dir)) / f"encoder-{digest[:32]}-v{CONVERTER_VERSION}.gguf"
    if target.is_file():
        return target
    # Two processes may both convert; each writes its own temp file and os.replace makes
    # the last one win with an identical file.
    return convert_encoder(Path(source), target)


def _read_json(path: Path, required: bool = True) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise ModelError(
                f"{path.parent}: not a sentence-transformers model ({path.name} missing)"
            )
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _bert_config(source: Path) -> dict[str, Any]:
    if not source.is_dir():
        raise ModelError(f"{source}: not a folder holding a sentence-transformers model")
    config = _read_json(source / "config.json")
    kind = config.get("model_type")
    architectures = config.get("architectures") or ["BertModel"]
    if kind != "bert" or not any(str(a).startswith("Bert") for a in architectures):
        raise ModelError(
            f"{source}: not a BERT model (model_type {kind!r}, architectures {architectures!r});"
            " only BERT sentence encoders convert to GGUF"
        )
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ModelError(f"{source}: only absolute position embeddings run in llama.cpp's BERT")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ModelError(f"{source}: llama.cpp's BERT needs gelu, not {config['hidden_act']!r}")
    needed = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
    )
    missing = [key for key in needed if not isinstance(config.get(key), int)]
    if missing:
        raise ModelError(f"{source}/config.json: missing {', '.join(missing)}")
    return config


def _max_seq_length(source: Path, config: dict[str, Any]) -> int:
    # sentence-transformers' order: its own config, else the tokenizer's model_max_length
    # (newer versions save it only there), capped by the position table.
    limit = int(config["max_position_embeddings"])
    st_config = _read_json(source / "sentence_bert_config.json", required=False)
    value = st_config.get("max_seq_length")
    if not isinstance(value, int):
        value = _read_json(source / "tokenizer_config.json", required=False).get("model_max_length")
    if not isinstance(value, int) or value <= 0:
        return limit
    return min(value, limit)


def _check_modules(source: Path) -> None:
    path = source / "modules.json"
    if not path.is_file():
        raise ModelError(f"{source}: not a sentence-transformers model (modules.json missing)")
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelError(f"{path}: expected a list of modules")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"}:
        raise ModelError(
            f"{source}: modules {kinds} are not Transformer + Pooling (+ Normalize);"
            " only that pipeline converts to GGUF"
        )
    pooling = _read_json(source / str(modules[1].get("path", "")) / "config.json")
    if not _mean_pooling(pooling):
        raise ModelError(f"{source}: pooling must be mean alone to run in llama.cpp")


def _mean_pooling(config: dict[str, Any]) -> bool:
    mode = config.get("pooling_mode")  # newer sentence-transformers: one key
    if mode is not None:
        return mode in ("mean", ["mean"])
    flags = {k for k, v in config.items() if k.startswith("pooling_mode_") and v is True}
    return flags == {"pooling_mode_mean_tokens"}


def _special_name(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _tokenizer(source: Path) -> Tokenizer:
    tok_json = _read_json(source / "tokenizer.json", required=False)
    model = tok_json.get("model", {})
    vocab: dict[str, int] = {}
    if model.get("type") == "WordPiece" and isinstance(model.get("vocab"), dict):
        vocab = {str(k): int(v) for k, v in model["vocab"].items()}
    elif (source / "vocab.txt").is_file():
        lines = (source / "vocab.txt").read_text(encoding="utf-8").splitlines()
        vocab = {line: i for i, line in enumerate(lines)}
    if not vocab:
        raise ModelError(f"{source}: no WordPiece vocabulary (vocab.txt or tokenizer.json)")
    if model and model.get("continuing_subword_prefix", "##") != "##":
        raise ModelError(f"{source}: WordPiece subword prefix must be '##'")
    tokens = [""] * (max(vocab.values()) + 1)
    for text, index in vocab.items():
        tokens[index] = text

    tok_config = _read_json(source / "tokenizer_config.json", required=False)
    special_map = _read_json(source / "special_tokens_map.json", required=False)
    specials: dict[str, int] = {}
    for role, default in SPECIAL_NAMES.items():
        name = (
            _special_name(tok_config.get(f"{role}_token"))
            or _special_name(special_map.get(f"{role}_token"))
            or default
        )
        if name not in vocab:
            raise ModelError(f"{source}: special token {name!r} is not in the vocabulary")
        specials[role] = vocab[name]
    control = set(specials.values())
    for added in tok_json.get("added_tokens", []):
        if added.get("special") and added.get("content") in vocab:
            control.add(vocab[added["content"]])

    normalizer = tok_json.get("normalizer") or {}
    if normalizer.get("type") == "BertNormalizer":
        lowercase = bool(normalizer.get("lowercase", True))
        strip = normalizer.get("strip_accents")
    else:
        lowercase = bool(tok_config.get("do_lower_case", True))
        strip = tok_config.get("strip_accents")
    # BERT's rule: accents are stripped when asked, or (left unset) when lowercasing.
    strip_accents = lowercase if strip is None else bool(strip)
    max_chars = model.get("max_input_chars_per_word", 100)
    return Tokenizer(tokens, specials, frozenset(control), lowercase, strip_accents, int(max_chars))


def _load_tensors(source: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    path = source / WEIGHTS
    if not path.is_file():
        raise ModelError(f"{source}: {WEIGHTS} missing (only safetensors weights convert)")
    try:
        loaded = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise ModelError(f"{path}: unreadable safetensors ({exc})") from exc
    tensors: dict[str, Any] = {}
    for name, array in loaded.items():
        for prefix in ("bert.", "model."):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        if name.endswith((".gamma", ".beta")):  # LayerNorm names of old checkpoints
            name = name.rsplit(".", 1)[0] + (".weight" if name.endswith("gamma") else ".bias")
        tensors[name] = array
    return tensors


def _gguf_tensors(tensors: dict[str, Any], layers: int) -> Iterator[tuple[str, Any]]:
    expected: dict[str, str] = dict(EMBEDDING_TENSORS)
    for n in range(layers):
        for hf, ours in LAYER_TENSORS.items():
            for part in ("weight", "bias"):
                expected[f"encoder.layer.{n}.{hf}.{part}"] = f"blk.{n}.{ours}.{part}"
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ModelError(f"not a BERT encoder: tensors missing ({', '.join(missing[:3])}, ...)")
    unknown = sorted(n for n in tensors if n not in expected and not n.startswith(IGNORED))
    if unknown:
        raise ModelError(f"unexpected tensors for a BERT encoder: {', '.join(unknown[:3])}")
    for hf, ours in expected.items():
        array = np.asarray(tensors[hf])
        if array.ndim == 2 and ours not in F32_TABLES:
            yield ours, np.ascontiguousarray(array, dtype=np.float16)
        else:
            yield ours, np.ascontiguousarray(array, dtype=np.float32)


def _write_header(
    writer: Any, gguf: Any, source: Path, config: dict[str, Any], max_seq: int
) -> None:
    writer.add_name(source.name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_uint32(KEY_MAX_SEQ_LENGTH, max_seq)
    writer.add_uint32(KEY_CONVERTER, CONVERTER_VERSION)


def _write_vocab(writer: Any, gguf: Any, tokenizer: Tokenizer, config: dict[str, Any]) -> None:
    vocab_size = int(config["vocab_size"])
    if len(tokenizer.tokens) > vocab_size:
        raise ModelError(
            f"the tokenizer has {len(tokenizer.tokens)} tokens, the model only {vocab_size}"
        )
    texts: list[str] = []
    types: list[int] = []
    for index in range(vocab_size):
        token = tokenizer.tokens[index] if index < len(tokenizer.tokens) else ""
        if not token:  # a gap or rows beyond the tokenizer: never produced
            texts.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in tokenizer.control:
            texts.append(token)
            types.append(gguf.TokenType.CONTROL)
        elif token.startswith("##"):
            # llama.cpp's WPM marks word starts with a phantom space instead of
            # marking continuations with "##".
            texts.append(token[2:])
            types.append(gguf.TokenType.NORMAL)
        else:
            texts.append("\u2581" + token)
            types.append(gguf.TokenType.NORMAL)
    if len(set(texts)) != len(texts):
        # llama.cpp maps text -> id and refuses a vocabulary where two ids share a text.
        raise ModelError("the vocabulary has tokens that coincide once '##' is dropped")
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(texts)
    writer.add_token_types(types)
    writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
    specials = tokenizer.specials
    writer.add_bos_token_id(specials["cls"])
    writer.add_eos_token_id(specials["sep"])
    writer.add_sep_token_id(specials["sep"])
    writer.add_unk_token_id(specials["unk"])
    writer.add_pad_token_id(specials["pad"])
    writer.add_mask_token_id(specials["mask"])
    # For llama.cpp's own tokenize (llama-server, Llama.embed): [CLS] from add_bos, [SEP] from
    # add_sep, as llama.cpp's defaults for WordPiece; add_eos stays off as there.
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
    writer.add_add_eos_token(False)
    writer.add_uint32(KEY_MAX_WORD_CHARS, tokenizer.max_word_chars)
    control = {tokenizer.tokens[i]: i for i in sorted(tokenizer.control)}
    writer.add_string(KEY_SPECIAL_TOKENS, json.dumps(control, ensure_ascii=False))
