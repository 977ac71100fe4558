"""SetFit-style fine-tuning of the sentence encoder, for tasks a frozen encoder cannot separate.

Contrastive pairs (same label: similar, different label: dissimilar) pull a task's classes
apart in embedding space; a fresh head is then trained on the tuned embeddings. The pair
count is capped so a run stays within a few minutes on a laptop CPU.

Whether to tune is decided on a dev part held out of the TRAIN split only, so calibration
and test stay untouched and the guarantee computed on them stays valid whichever encoder
wins.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stillroom.errors import TaskError
from stillroom.registry import Task
from stillroom.service.classifier import ENCODER_DIR
from stillroom.service.encoder import Encoder
from stillroom.trainers.classifier import train_head
from stillroom.trainers.dataset import Item

MAX_PAIRS = 2000  # ~75 s of training on 2 CPU cores for short texts
MAX_SECONDS = 180.0  # and long file descriptions stop here, whatever pairs are left
TUNE_TOKENS = 128  # sequence length while tuning (and after: the tuned encoder keeps it)
PAIRS_PER_EXAMPLE = 40  # SetFit's default of 20 iterations gives each example 20 + 20 pairs
BATCH = 16
DEV_SHARE = 0.2
MIN_TUNE_EXAMPLES = 8
MIN_GAIN = 0.02  # a tuned encoder that misses the bar must beat the frozen one by this much

Progress = Callable[[str], None]


def make_pairs(
    texts: Sequence[str], labels: Sequence[str], max_pairs: int = MAX_PAIRS, seed: int = 0
) -> list[tuple[str, str, float]]:
    """Balanced positive and negative pairs, cycling through every example."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in zip(texts, labels, strict=True):
        by_label[label].append(text)
    names = sorted(by_label)
    if len(names) < 2:
        return []
    pairs: list[tuple[str, str, float]] = []
    order = list(zip(texts, labels, strict=True))
    while len(pairs) < max_pairs:
        rng.shuffle(order)
        for text, label in order:
            same = by_label[label]
            if len(same) > 1:
                other = rng.choice([t for t in same if t != text] or same)
                pairs.append((text, other, 1.0))
            negative = rng.choice([n for n in names if n != label])
            pairs.append((text, rng.choice(by_label[negative]), 0.0))
            if len(pairs) >= max_pairs:
                break
    return pairs[:max_pairs]


def fine_tune(
    base: Path,
    texts: Sequence[str],
    labels: Sequence[str],
    out: Path,
    *,
    max_pairs: int = MAX_PAIRS,
    max_seconds: float = MAX_SECONDS,
    lr: float = 2e-5,
    seed: int = 0,
    progress: Progress = lambda _: None,
) -> Path:
    """Fine-tune the encoder at `base` on pairs from the examples; save it (safetensors) to
    `out` and return that folder. Training stops after `max_seconds` with the pairs seen."""
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
    ):
        os.environ.setdefault(name, value)
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    model = SentenceTransformer(str(base), device="cpu")
    model.max_seq_length = min(model.max_seq_length or TUNE_TOKENS, TUNE_TOKENS)
    pairs = make_pairs(texts, labels, max_pairs, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    steps = (len(pairs) + BATCH - 1) // BATCH
    started = time.perf_counter()
    for step in range(steps):
        if step and time.perf_counter() - started > max_seconds:
            progress(f"fine-tuning the encoder: time budget spent after {step}/{steps} steps")
            break
        batch = pairs[step * BATCH : (step + 1) * BATCH]
        features = model.preprocess([a for a, _, _ in batch] + [b for _, b, _ in batch])
        embeddings = model(dict(features))["sentence_embedding"]
        left, right = embeddings[: len(batch)], embeddings[len(batch) :]
        target = torch.tensor([s for _, _, s in batch], dtype=torch.float32)
        # CosineSimilarityLoss, as SetFit uses: squared gap between cosine and the pair label.
        loss = ((torch.nn.functional.cosine_similarity(left, right) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if step % 10 == 0 or step == steps - 1:
            progress(f"fine-tuning the encoder: step {step + 1}/{steps}, loss {loss.item():.3f}")
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out), safe_serialization=True)
    return out


def hold_out_dev(
    items: Sequence[Item], share: float = DEV_SHARE, seed: int = 0
) -> tuple[list[Item], list[Item]]:
    """Split (fit, dev) by label: about `share` of each label with 2+ items goes to dev (at
    least one); a label's last item always stays in fit, so the head can still learn it."""
    rng = random.Random(seed)
    by_label: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_label[item.output].append(item)
    fit: list[Item] = []
    dev: list[Item] = []
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        n_dev = min(len(group) - 1, max(1, round(len(group) * share)))
        dev += group[:n_dev]
        fit += group[n_dev:]
    return fit, dev


@dataclass
class EncoderChoice:
    """The encoder the final head is trained on, and the evidence for picking it."""

    encoder: Encoder
    tuned: Path | None = None  # the tuned encoder's folder when it was kept
    metrics: dict[str, Any] = field(default_factory=dict)

    def release(self) -> None:
        """Drop a tuned model from the encoder's in-memory cache: its folder moves or goes."""
        if self.tuned is not None:
            _unload(self.tuned)


def choose_encoder(
    task: Task,
    train: Sequence[Item],
    shared: Encoder,
    scratch: Path,
    progress: Progress = lambda _: None,
    *,
    can_guarantee: bool = True,
) -> EncoderChoice:
    """Keep the shared encoder when its head clears the task's bar on a dev part of `train`;
    otherwise fine-tune a copy (in `scratch`) and keep it where it does better.

    `can_guarantee` False (a calibration split too small for any threshold to pass) skips
    tuning: the version will abstain on everything whichever encoder it has.
    """
    budget, bar = pair_budget(task), 1.0 - task.target
    seconds_budget = time_budget(task)
    fit, dev = hold_out_dev(train)
    if not dev:
        return EncoderChoice(shared, metrics={"encoder": "shared", "bar": None})
    before = dev_accuracy(shared, fit, dev)
    check = {"needed": round(bar, 4), "dev_size": len(dev), "dev_accuracy": before}
    metrics: dict[str, Any] = {"encoder": "shared", "bar": check}
    if before >= bar:
        return EncoderChoice(shared, metrics=metrics)
    pairs = min(budget, PAIRS_PER_EXAMPLE * len(fit))
    sizes = Counter(item.output for item in train)
    skipped = None
    if pairs == 0:
        skipped = "turned off (setfit_pairs: 0)"
    elif len(train) < MIN_TUNE_EXAMPLES or sum(n >= 2 for n in sizes.values()) < 2:
        skipped = "too few training examples"
    elif not can_guarantee:
        skipped = "too few calibration examples for any guarantee yet"
    if skipped:
        return EncoderChoice(shared, metrics={**metrics, "setfit": {"skipped": skipped}})
    progress(
        f"the head scores {before:.0%} on {len(dev)} held-out training examples (bar {bar:.0%}):"
        f" fine-tuning the encoder on {pairs} pairs"
    )
    started = time.perf_counter()
    folder = fine_tune(
        shared.path,
        [i.input for i in fit],
        [i.output for i in fit],
        scratch / ENCODER_DIR,
        max_pairs=pairs,
        max_seconds=seconds_budget,
        progress=progress,
    )
    tuned = Encoder(folder)  # no store: a scratch path is no key worth caching under
    after = dev_accuracy(tuned, fit, dev)
    seconds = time.perf_counter() - started
    if after >= bar:
        verdict = "kept: clears the bar"
    elif after - before >= MIN_GAIN - 1e-9:  # the accuracies are rounded
        verdict = f"kept: beats the shared encoder by {100 * (after - before):.0f} points"
    else:
        verdict = "discarded: no better than the shared encoder"
    kept = verdict.startswith("kept")
    progress(f"the tuned encoder scores {after:.0%} on the held-out examples ({verdict})")
    metrics["setfit"] = {
        "pairs": pairs,
        "seconds": round(seconds, 3),
        "dev_accuracy_before": before,
        "dev_accuracy_after": after,
        "kept": kept,
        "verdict": verdict,
    }
    if not kept:
        _unload(folder)
        return EncoderChoice(shared, metrics=metrics)
    return EncoderChoice(tuned, folder, {**metrics, "encoder": "own"})


def dev_accuracy(encoder: Encoder, fit: Sequence[Item], dev: Sequence[Item]) -> float:
    """Accuracy on `dev` of a head trained on `fit` over this encoder's embeddings."""
    head = train_head(encoder.encode([i.input for i in fit]), [i.output for i in fit])
    best = head.probabilities(encoder.encode([i.input for i in dev])).argmax(axis=1)
    right = [head.labels[j] == i.output for j, i in zip(best, dev, strict=True)]
    return round(float(np.mean(right)), 4)


def pair_budget(task: Task) -> int:
    """The task's cap on training pairs (`setfit_pairs` in its spec; 0 turns tuning off)."""
    value = task.spec.get("setfit_pairs", MAX_PAIRS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TaskError(f"{task.name}: setfit_pairs must be a whole number >= 0, got {value!r}")
    return value


def time_budget(task: Task) -> float:
    """The task's cap on tuning time in seconds (`setfit_seconds` in its spec)."""
    value = task.spec.get("setfit_seconds", MAX_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise TaskError(f"{task.name}: setfit_seconds must be a number > 0, got {value!r}")
    return float(value)


def _unload(folder: Path) -> None:
    # A tuned model in a scratch folder would otherwise stay in memory after the run.
    Encoder.unload(folder)
