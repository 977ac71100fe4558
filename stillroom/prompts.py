"""What an LLM call asks: its instruction with the variable parts masked (its template),
and the input that changes from call to call.

The detector groups calls by template; the gateway's local answerer matches a call to a
learned task by the template's hash. Both use these functions, so they live in the core.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

INPUT = "<input>"
LONG_BLOCK = 40  # a bracketed block longer than this is data, not instruction
MAX_INSTRUCTION_WORDS = 40

_MONTH = (
    r"(?:january|february|march|april|may|june|july|august|september|october|november"
    r"|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\b\.?"
)
_EXTENSIONS = (
    "pdf|txt|md|csv|tsv|json|jsonl|xml|yaml|yml|html?|docx?|xlsx?|pptx?|odt|ods|rtf|"
    "png|jpe?g|gif|webp|svg|heic|tiff?|bmp|mp3|mp4|wav|flac|mov|mkv|avi|zip|tar|gz|tgz|"
    "7z|rar|exe|dmg|deb|rpm|iso|py|js|ts|java|c|cpp|h|go|rs|rb|sh|log|ini|toml|cfg|sql"
)

# Order matters: wider shapes go first so their pieces are not masked one by one.
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"```.*?(?:```|\Z)", re.S), "<code>"),
    (re.compile(r"(?:https?://|\bwww\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]", re.I), "<url>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (
        re.compile(
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
            r"|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{12,}\b",
            re.I,
        ),
        "<id>",
    ),
    (
        re.compile(
            r"\b\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?)?\b"
            r"|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"
            rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}(?:,?\s+\d{{4}})?\b"
            rf"|\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b",
            re.I,
        ),
        "<date>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?(?!\w)", re.I), "<time>"),
    (
        re.compile(
            r"(?<![\w/])(?:~|\.{1,2})?/(?:[\w.-]+/)*[\w.-]*[\w-]/?"
            r"|\b[a-z]:\\(?:[\w.-]+\\)*(?:[\w.-]*[\w-])?"
            rf"|\b[\w-]+\.(?:{_EXTENSIONS})\b",
            re.I,
        ),
        "<path>",
    ),
    (
        re.compile(
            r"(?<!\w)'(?:[^'\n]|'(?=\w))+'(?!\w)|\"[^\"\n]+\"|`[^`\n]+`|\u201c[^\u201d\n]+\u201d"
            r"|\u2018[^\u2019\n]+\u2019"
        ),
        "<quoted>",
    ),
    (re.compile(r"(?<![\w.])[-+]?\d+(?:[.,_]\d+)*(?:\s?%)?(?![\w])"), "<num>"),
]


def mask(text: str) -> str:
    """Replace the variable parts of a text (numbers, dates, paths, quotes...) with placeholders."""
    text = _mask_blocks(text)
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return " ".join(text.split())


def _mask_blocks(text: str) -> str:
    """Long bracketed blocks ({...}, [...]) are data: JSON, lists, code."""
    closing = _bracket_pairs(text)
    out: list[str] = []
    i = 0
    while i < len(text):
        end = closing.get(i, -1)
        if end > i and (end - i + 1 > LONG_BLOCK or "\n" in text[i:end]):
            out.append("<json>")
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _bracket_pairs(text: str) -> dict[int, int]:
    """Where each bracket closes, skipping the strings inside brackets; one pass."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    in_string = escaped = False
    for j, ch in enumerate(text):
        if in_string:
            in_string = escaped or ch != '"'
            escaped = not escaped and ch == "\\"
        elif ch == '"' and stack:
            in_string = True
        elif ch in "{[":
            stack.append(j)
        elif ch in "}]" and stack and text[stack[-1]] == ("{" if ch == "}" else "["):
            pairs[stack.pop()] = j
    return pairs


def split_instruction(message: str) -> tuple[str, str | None]:
    """A user message as (instruction, variable input), or (message, None) when it has no
    clear input. The instruction is a short first (or last) paragraph or line, or the words
    before the first ": " or "? " ("Classify this ticket: <text>")."""
    text = message.strip()
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    if len(blocks) > 1:
        first, last = blocks[0], blocks[-1]
        if _instruction_like(first) and (first.endswith((":", "?")) or not _asks(last)):
            return first, text[len(first) :].strip()
        if _instruction_like(last):
            return last, text[: len(text) - len(last)].strip()
    lines = text.splitlines()
    if len(lines) > 1 and _instruction_like(lines[0]):
        return lines[0].strip(), "\n".join(lines[1:]).strip()
    head = re.match(r"(.+?[:?])\s+(\S.*)", text, re.S)
    if head and len(head[1].split()) >= 2 and _instruction_like(head[1]):
        return head[1], head[2]
    return text, None


def variable_part(message: str) -> str:
    """The part of a user message that changes between calls (the whole message if none)."""
    return split_instruction(message)[1] or message.strip()


def _instruction_like(text: str) -> bool:
    return 0 < len(text.split()) <= MAX_INSTRUCTION_WORDS and "\n" not in text.strip()


_BACK_REFERENCE = re.compile(
    r"\b(?:above|previous|preceding|(?:the|this|that) (?:text|message|passage|review|email"
    r"|ticket|document|article|paragraph|snippet|code|question))\b",
    re.I,
)


def _asks(text: str) -> bool:
    """A block that reads as the request about the text before it ("Is the review above
    positive?"). A bare question is not: in "Answer with the intent only.\n\nWhere is my
    card?" the question is the input."""
    return _instruction_like(text) and bool(_BACK_REFERENCE.search(text))


@dataclass(frozen=True)
class PromptShape:
    """A chat request as a task sees it. `instruction_at` says where the instruction sits:
    "user" (one user message holds instruction and input, or only an instruction) or
    "system" (the system message instructs and the whole user message is the input)."""

    template: str
    input: str
    instruction: str
    instruction_at: Literal["user", "system"]
    user: str

    @property
    def template_hash(self) -> str:
        return template_hash(self.template)


def prompt_shape(messages: Sequence[Mapping[str, Any]]) -> PromptShape | None:
    """The shape of a chat request from its system messages and its last user message, or
    None when it has no user text."""
    system = [message_text(m).strip() for m in messages if m.get("role") in ("system", "developer")]
    system = [t for t in system if t]
    users = [message_text(m) for m in messages if m.get("role") == "user"]
    if not users or not users[-1].strip():
        return None
    user = users[-1]
    instruction, variable = split_instruction(user)
    masked = [mask(s) for s in system]
    if variable is None and system:
        # The system message is the instruction; the user message is all input.
        return PromptShape(
            "\n".join([*masked, INPUT]), user.strip(), "\n".join(system), "system", user
        )
    template = "\n".join([*masked, mask(instruction) + (f" {INPUT}" if variable else "")])
    said = "\n".join([*system, instruction])
    return PromptShape(template, variable or user.strip(), said, "user", user)


def prompt_signature(messages: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(masked instruction, the user message) of a chat request: its system messages and its
    last user message, with the input replaced by a placeholder."""
    shape = prompt_shape(messages)
    return None if shape is None else (shape.template, shape.user)


def instruction_templates(instruction: str, sample: str) -> dict[str, str]:
    """The templates of calls that ask a task made by hand: the instruction as the system
    message with the input as the user's, or both in one user message (`sample`, an input of
    the task, shows how that one splits)."""
    shapes = [
        prompt_shape(
            [{"role": "system", "content": instruction}, {"role": "user", "content": sample}]
        ),
        prompt_shape([{"role": "user", "content": f"{instruction}\n\n{sample}"}]),
    ]
    return {s.template_hash: s.template for s in shapes if s is not None and INPUT in s.template}


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text; OpenAI content parts are joined (their non-text parts dropped)."""
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def template_hash(template: str) -> str:
    """A short stable key for a template: how a call finds its task without embeddings."""
    return hashlib.sha256(template.encode()).hexdigest()[:16]


def label_key(text: str) -> str:
    """Answers that differ only in case, spacing or end punctuation are one label."""
    return " ".join(text.split()).strip(" .!\"'`").casefold()
