"""Teaching a task made by hand: the teacher labels the given inputs, writes more inputs like
them (diverse, deduplicated), and labels those too. Spend is estimated before, counted after."""

from __future__ import annotations

import difflib
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from stillroom.errors import TeacherError
from stillroom.pricing import estimate_tokens
from stillroom.spend import Plan, Spend, message_tokens
from stillroom.teachers import Message, Teacher

Progress = Callable[[str], None]

LABEL_WORKERS = 4  # labels are independent: a few in flight at once
SYNTH_BATCH = 10  # inputs asked for per synthesis call
SYNTH_SHOWN = 6  # example inputs shown in each synthesis request
SYNTH_TEMPERATURE = 1.0
NEAR_COPY = 0.9  # similarity (difflib ratio on normalised words) that counts as a copy
CLASSIFY_MAX_TOKENS = 32
VARIATIONS = (
    "Vary the wording, the length and the tone.",
    "Make them unlike the examples: other situations, other details, other people.",
    "Mix short, terse ones with long, detailed ones.",
    "Include unusual but clear cases that the examples do not cover.",
    "Write them as different kinds of people would: hurried, polite, angry, formal.",
)
SYNTH_SYSTEM = (
    "You write example inputs for a task that a small model will learn from. Write realistic"
    " inputs as real users would send them. Do not answer or label them."
)


@dataclass(frozen=True)
class Taught:
    """What the teacher produced: (input, output, source) rows and what it cost."""

    rows: list[tuple[str, str, str]]
    spend: Spend
    labelled: int = 0
    synthesized: int = 0
    rejected: int = 0  # synthesized inputs dropped as repeats or near-copies
    unanswered: int = 0  # inputs the teacher answered with nothing

    def describe(self) -> str:
        parts = [f"labelled {self.labelled} given input(s)"]
        if self.synthesized or self.rejected:
            parts.append(
                f"synthesized {self.synthesized} more ({self.rejected} repeats or near-copies"
                " dropped)"
            )
        if self.unanswered:
            parts.append(f"{self.unanswered} got no answer and were left out")
        return "teacher: " + ", ".join(parts) + f"; spent {self.spend.describe()}"


@dataclass
class Labels:
    """The label set as it emerges: the first spelling of a label is the one kept."""

    known: dict[str, str] = field(default_factory=dict)

    def add(self, label: str) -> str:
        return self.known.setdefault(label.casefold(), label)

    def names(self) -> list[str]:
        return list(self.known.values())


# -- prompts ------------------------------------------------------------------------------


def label_messages(instruction: str, kind: str, text: str, labels: Sequence[str]) -> list[Message]:
    """The instruction as the system prompt, the input alone as the user message."""
    if kind == "classify":
        rule = "Answer with the label only: no explanation, no punctuation."
        if labels:
            rule += " Use exactly one of these labels: " + ", ".join(labels) + "."
    else:
        rule = "Answer with the output only, no explanation."
    return [
        {"role": "system", "content": f"{instruction}\n\n{rule}"},
        {"role": "user", "content": text},
    ]


def synthesis_messages(
    instruction: str, shown: Sequence[str], count: int, variation: str, labels: Sequence[str]
) -> list[Message]:
    """Ask for `count` new inputs like (and unlike) the ones shown, as a JSON list."""
    lines = [f"Task instruction: {instruction}", ""]
    if shown:
        lines += ["Some inputs this task gets:", *(f"- {json.dumps(s)}" for s in shown), ""]
    lines.append(f"Write {count} new inputs for this task. {variation}")
    if labels:
        lines.append("Cover a balanced mix of the cases answered " + ", ".join(labels) + ".")
    lines.append(
        "Each must differ from the inputs above and from each other."
        f" Reply with a JSON list of {count} strings and nothing else."
    )
    return [
        {"role": "system", "content": SYNTH_SYSTEM},
        {"role": "user", "content": "\n".join(lines)},
    ]


def clean_label(answer: str) -> str:
    """A classify answer with whitespace normalised and wrapping quotes or a final stop cut."""
    text = " ".join(answer.split()).strip("\"'`*")
    return text.removesuffix(".").strip()


def parse_list(text: str) -> list[str]:
    """The strings of a JSON list found in the answer (code fences and chatter around it are
    fine); failing that, one item per line, skipping lines cut off mid-string."""
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        try:
            data = json.loads(text[start : end + 1])
        except ValueError:
            data = None
        if isinstance(data, list):
            return [s for s in map(_item_text, data) if s]
    items = []
    for raw in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", raw).strip().rstrip(",").strip()
        if not line or line[0] in "[]{}`" or line.endswith(":"):
            continue
        if line.startswith('"'):
            try:
                line = json.loads(line)
            except ValueError:
                continue  # truncated by max_tokens
        items.append(str(line).strip())
    return [s for s in items if s]


def _item_text(item: object) -> str:
    if isinstance(item, dict):
        item = item.get("input") or item.get("text")
    return item.strip() if isinstance(item, str) else ""


def key(text: str) -> str:
    """What makes two inputs the same: their words, case and punctuation aside."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def near_copy(candidate: str, originals: Iterable[str]) -> bool:
    """True when a (normalised) input is a light edit of one of the originals."""
    matcher = difflib.SequenceMatcher(None, b=candidate)  # b is the side it indexes
    for original in originals:
        matcher.set_seq1(original)
        if (
            matcher.real_quick_ratio() >= NEAR_COPY
            and matcher.quick_ratio() >= NEAR_COPY
            and matcher.ratio() >= NEAR_COPY
        ):
            return True
    return False


# -- labelling ----------------------------------------------------------------------------


def label_all(
    teacher: Teacher,
    instruction: str,
    kind: str,
    inputs: Sequence[str],
    labels: Labels,
    spend: Spend,
    progress: Progress = lambda _: None,
) -> list[str | None]:
    """The teacher's answer to each input, in order (None where it said nothing). Classify
    answers are cleaned and matched case-insensitively to the labels seen so far."""
    allowed = labels.names()
    max_tokens = CLASSIFY_MAX_TOKENS if kind == "classify" else None

    def ask(text: str) -> str:
        messages = label_messages(instruction, kind, text, allowed)
        completion = teacher.complete(messages, max_tokens=max_tokens)
        spend.add(completion)
        return completion.text

    pool = ThreadPoolExecutor(LABEL_WORKERS, thread_name_prefix="teacher")
    try:
        futures = [pool.submit(ask, text) for text in inputs]
        for done, _ in enumerate(as_completed(futures), 1):
            progress(f"labelled {done}/{len(inputs)}")
        answers = [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    # Matching runs in input order after the fact, so the kept spellings do not depend on
    # which call came back first.
    out: list[str | None] = []
    for answer in answers:
        text = clean_label(answer) if kind == "classify" else answer.strip()
        out.append((labels.add(text) if kind == "classify" else text) if text else None)
    return out


# -- synthesis ----------------------------------------------------------------------------


@dataclass
class Synthesis:
    made: list[str] = field(default_factory=list)
    rejected: int = 0
    calls: int = 0


def synthesize(
    teacher: Teacher,
    instruction: str,
    given: Sequence[str],
    count: int,
    spend: Spend,
    *,
    labels: Sequence[str] = (),
    existing: Iterable[str] = (),
    max_calls: int | None = None,
    may_continue: Callable[[int], bool] = lambda _: True,
    seed: int = 0,
    progress: Progress = lambda _: None,
) -> Synthesis:
    """Ask for new inputs in batches until `count` new distinct ones are in hand, the calls
    run out, or `may_continue(made so far)` says stop (the budget). Each request shows a
    different sample and asks for a different kind of variety."""
    rng = random.Random(seed)
    originals = [key(t) for t in given]
    seen = {*originals, *(key(t) for t in existing)}
    result = Synthesis()
    max_calls = max_calls if max_calls is not None else 3 * -(-count // SYNTH_BATCH) + 2
    while len(result.made) < count and result.calls < max_calls:
        if not may_continue(len(result.made)):
            break
        shown = _sample(rng, given, result.made)
        variation = VARIATIONS[result.calls % len(VARIATIONS)]
        want = min(SYNTH_BATCH, count - len(result.made))
        messages = synthesis_messages(instruction, shown, want, variation, labels)
        completion = teacher.complete(messages, temperature=SYNTH_TEMPERATURE)
        spend.add(completion)
        result.calls += 1
        for text in parse_list(completion.text):
            k = key(text)
            if not k or k in seen or near_copy(k, originals):
                result.rejected += 1
                continue
            seen.add(k)
            result.made.append(text)
            if len(result.made) >= count:
                break
        progress(f"synthesized {len(result.made)}/{count}")
    return result


def _sample(rng: random.Random, given: Sequence[str], made: Sequence[str]) -> list[str]:
    """A rotating sample: mostly given inputs, some of the teacher's own to steer away from."""
    from_made = min(len(made), SYNTH_SHOWN // 3)
    from_given = min(len(given), SYNTH_SHOWN - from_made)
    return rng.sample(list(given), from_given) + rng.sample(list(made), from_made)


# -- the whole job ------------------------------------------------------------------------


def teach(
    teacher: Teacher,
    instruction: str,
    kind: str,
    inputs: Sequence[str],
    count: int,
    *,
    examples: Sequence[tuple[str, str]] = (),
    plan: Plan | None = None,
    max_cost: float | None = None,
    progress: Progress = lambda _: None,
) -> Taught:
    """Label the inputs, synthesize `count` more like them (and the examples), label those.
    With a plan and max_cost, synthesis stops early rather than spend past max_cost."""
    spend = Spend()
    labels = Labels()
    for _, output in examples:
        labels.add(output)
    try:
        answers = label_all(teacher, instruction, kind, inputs, labels, spend, progress)
        given = [*inputs, *(i for i, _ in examples)]

        def may_continue(made: int) -> bool:
            if plan is None or max_cost is None or spend.cost_usd is None:
                return True
            return spend.cost_usd + plan.next_synthesis_cost(made) <= max_cost

        synthesis = synthesize(
            teacher,
            instruction,
            given,
            count,
            spend,
            labels=labels.names() if kind == "classify" else (),
            may_continue=may_continue,
            progress=progress,
        )
        made = synthesis.made
        made_answers = label_all(teacher, instruction, kind, made, labels, spend, progress)
    except TeacherError as exc:
        raise TeacherError(f"{exc} (spent before it stopped: {spend.describe()})") from None
    rows = [(i, a, "teacher") for i, a in zip(inputs, answers, strict=True) if a]
    rows += [(i, a, "synthetic") for i, a in zip(made, made_answers, strict=True) if a]
    unanswered = answers.count(None) + made_answers.count(None)
    return Taught(rows, spend, len(inputs), len(made), synthesis.rejected, unanswered)


# -- the estimate -------------------------------------------------------------------------


def plan_teaching(
    teacher: Teacher,
    instruction: str,
    kind: str,
    inputs: Sequence[str],
    count: int,
    *,
    examples: Sequence[tuple[str, str]] = (),
) -> Plan:
    """Estimate the calls, tokens and dollars of `teach` from the prompts it will send;
    synthesized inputs are assumed as long as the given ones on average."""
    labels = Labels()
    for _, output in examples:
        labels.add(output)
    typical = [*inputs, *(i for i, _ in examples)] or [instruction]
    average = -(-sum(estimate_tokens(t) for t in typical) // len(typical))
    label_out = 4 if kind == "classify" else average + 10  # a label, or an answer as long
    label_in = sum(
        message_tokens(label_messages(instruction, kind, t, labels.names())) for t in inputs
    )
    new_label_in = message_tokens(label_messages(instruction, kind, "", labels.names())) + average
    calls = -(-count // SYNTH_BATCH)
    longest = max(VARIATIONS, key=len)
    shown = typical[:SYNTH_SHOWN]
    names = labels.names() or (["a label"] * 4 if kind == "classify" else [])
    synth_in = message_tokens(synthesis_messages(instruction, shown, SYNTH_BATCH, longest, names))
    synth_out = SYNTH_BATCH * (average + 4)  # JSON quotes and commas
    input_tokens = label_in + count * new_label_in + calls * synth_in
    output_tokens = (len(inputs) + count) * label_out + calls * synth_out
    return Plan(
        model=teacher.model,
        label_calls=len(inputs) + count,
        synthesis_calls=calls,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=teacher.cost(input_tokens, output_tokens),
        label_call_usd=teacher.cost(new_label_in, label_out),
        synthesis_call_usd=teacher.cost(synth_in, synth_out),
        batch=SYNTH_BATCH,
    )
