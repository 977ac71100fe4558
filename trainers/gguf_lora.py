"""PEFT LoRA adapters as GGUF LoRA adapters, so llama.cpp serves a student over its base.

Torch-free: the adapter is read with numpy, checked against the base GGUF's tensors and
written as float32. llama.cpp applies `scale * alpha / rank * B @ A` to each base weight.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stillroom.errors import ModelError
from stillroom.paths import PRIVATE_FILE

if TYPE_CHECKING:
    from numpy.typing import NDArray

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# PEFT's module names in a llama-style model and llama.cpp's names for the same weights.
MODULES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
SUPPORTED_ARCHS = ("llama",)  # the q/k row permutation below is llama.cpp's llama converter's
_TENSOR = re.compile(
    r"(?:base_model\.model\.)?model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight"
)


def export_lora_gguf(adapter_dir: Path, base_gguf: Path, target: Path) -> Path:
    """Write the PEFT adapter in adapter_dir as a GGUF LoRA adapter for base_gguf."""
    import gguf

    settings = _adapter_config(adapter_dir)
    base = _base_shape(base_gguf)
    pairs = _pairs(adapter_dir, base)
    rank = int(settings["r"])
    alpha = float(settings["lora_alpha"])
    if settings.get("use_rslora"):
        # rsLoRA scales by alpha / sqrt(r); llama.cpp by alpha / r: carry the difference here.
        alpha *= math.sqrt(rank)

    fd, scratch = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(scratch, arch=base["arch"])
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for name, (lora_a, lora_b) in sorted(pairs.items()):
            # GGUF stores shapes innermost-first, so PEFT's (r, in) A and (out, r) B are
            # already the ne = [in, r] and [r, out] llama.cpp expects: no transpose.
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(lora_a, dtype=np.float32))
            writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(lora_b, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(scratch, PRIVATE_FILE)
        os.replace(scratch, target)
    finally:
        Path(scratch).unlink(missing_ok=True)
    return target


def _adapter_config(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / ADAPTER_CONFIG
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable PEFT adapter config ({exc})") from exc
    if not isinstance(settings, dict) or settings.get("peft_type") != "LORA":
        raise ModelError(f"{path}: not a LoRA adapter")
    refused = {
        "use_dora": "DoRA",
        "modules_to_save": "fully trained modules",
        "rank_pattern": "per-module ranks",
        "alpha_pattern": "per-module alphas",
        "trainable_token_indices": "trained token embeddings",
    }
    for key, what in refused.items():
        if settings.get(key):
            raise ModelError(f"{path}: {what} ({key}) cannot be served by llama.cpp")
    if settings.get("bias", "none") != "none" or settings.get("lora_bias"):
        raise ModelError(f"{path}: LoRA biases cannot be served by llama.cpp")
    targets = settings.get("target_modules")
    names = [targets] if isinstance(targets, str) else list(targets or [])
    unknown = sorted(set(names) - set(MODULES))
    if not names or unknown:
        raise ModelError(
            f"{path}: target modules {unknown or names} are not among {sorted(MODULES)}"
        )
    if not isinstance(settings.get("r"), int) or not settings.get("lora_alpha"):
        raise ModelError(f"{path}: r and lora_alpha are required")
    return settings


def _base_shape(base_gguf: Path) -> dict[str, Any]:
    """The base's architecture, head counts and tensor shapes (GGUF order: [in, out])."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(base_gguf)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{base_gguf}: not a readable GGUF file ({exc})") from exc
    fields = reader.fields
    arch = fields["general.architecture"].contents() if "general.architecture" in fields else None
    if arch not in SUPPORTED_ARCHS:
        raise ModelError(f"{base_gguf}: architecture {arch!r} is not supported for LoRA export")
    try:
        heads = int(fields[f"{arch}.attention.head_count"].contents())
        kv_heads = int(fields[f"{arch}.attention.head_count_kv"].contents())
        layers = int(fields[f"{arch}.block_count"].contents())
    except KeyError as exc:
        raise ModelError(f"{base_gguf}: metadata {exc} is missing") from exc
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    return {"arch": arch, "heads": heads, "kv_heads": kv_heads, "layers": layers, "shapes": shapes}


def _pairs(
    adapter_dir: Path, base: dict[str, Any]
) -> dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """llama.cpp tensor name -> (A, B), checked against the base and with B permuted."""
    halves: dict[str, dict[str, NDArray[np.float32]]] = {}
    for key, value in _load_tensors(adapter_dir / ADAPTER_WEIGHTS).items():
        match = _TENSOR.fullmatch(key)
        if match is None or match.group(2) not in MODULES:
            raise ModelError(f"{adapter_dir}: tensor {key} has no llama.cpp counterpart")
        layer = int(match.group(1))
        if layer >= base["layers"]:
            raise ModelError(
                f"{adapter_dir}: layer {layer} is beyond the base's {base['layers']} layers"
            )
        name = f"blk.{layer}.{MODULES[match.group(2)]}.weight"
        halves.setdefault(name, {})[match.group(3)] = value.astype(np.float32)
    if not halves:
        raise ModelError(f"{adapter_dir}: the adapter has no LoRA tensors")
    pairs = {}
    for name, half in halves.items():
        if set(half) != {"A", "B"}:
            raise ModelError(f"{adapter_dir}: {name} lacks its lora_A or lora_B")
        lora_a, lora_b = half["A"], half["B"]
        shape = base["shapes"].get(name)
        if shape is None:
            raise ModelError(f"{adapter_dir}: the base has no tensor {name}")
        n_in, n_out = shape
        if (
            lora_a.shape[1] != n_in
            or lora_b.shape[0] != n_out
            or lora_a.shape[0] != lora_b.shape[1]
        ):
            raise ModelError(
                f"{adapter_dir}: {name} A {lora_a.shape} B {lora_b.shape} do not fit the "
                f"base's ({n_out}, {n_in})"
            )
        if ".attn_q." in name:
            lora_b = permute_qk_rows(lora_b, base["heads"])
        elif ".attn_k." in name:
            lora_b = permute_qk_rows(lora_b, base["kv_heads"])
        pairs[name] = (lora_a, lora_b)
    return pairs


def permute_qk_rows(rows: NDArray[np.float32], heads: int) -> NDArray[np.float32]:
    """Reorder output rows as llama.cpp's converter reorders q/k weights for its rope.

    HF rotates the two halves of each head; llama.cpp rotates interleaved pairs, so each
    head's rows go from [first half; second half] to alternating.
    """
    n_out = rows.shape[0]
    return (
        rows.reshape(heads, 2, n_out // heads // 2, *rows.shape[1:])
        .swapaxes(1, 2)
        .reshape(rows.shape)
    )


def _load_tensors(path: Path) -> dict[str, NDArray[Any]]:
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except TypeError:  # numpy has no bfloat16 (adapters trained in bf16 on a GPU)
        return _load_bfloat16(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc


def _load_bfloat16(path: Path) -> dict[str, NDArray[Any]]:
    """Read a safetensors file by hand, widening BF16 to float32 (its top 16 bits)."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    body = memoryview(data)[8 + size :]
    widths = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    tensors: dict[str, NDArray[Any]] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in widths:
            raise ModelError(f"{path}: tensor {key} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=widths[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[key] = array
    return tensors
