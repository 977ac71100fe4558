"""The repetition detector: observations -> templates -> paraphrase clusters -> candidates.

Runs in a child process (`python -m stillroom.daemon.detector`); numpy, hdbscan, sklearn and
the encoder are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from stillroom.config import Config, DetectorConfig
from stillroom.config_files import load_config
from stillroom.daemon.signatures import Observation, observe, variable_part
from stillroom.paths import Paths
from stillroom.prompts import label_key, template_hash
from stillroom.store import Store

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

Kind = Literal["classify", "extract", "generate"]
KINDS_OBSERVED = ("file.moved", "llm.call")
MAX_EVENTS = 200_000
MAX_CLUSTERED = 5_000  # templates beyond the most frequent ones stay their own group
MAX_EVENT_IDS = 20_000  # the newest, when more: what promotion takes examples from
MAX_TEMPLATES_KEPT = 50
MAX_INSTRUCTIONS_KEPT = 20
MAX_CV = 2_000
LABEL_COVERAGE = 0.8  # classify: recurring labels cover this share of outcomes
EXTRACT_SHARE = 0.8  # extract: this share of outcomes is drawn from its input...
TOKEN_SHARE = 0.9  # ...meaning this share of the outcome's words appear in the input
GENERATE_PRIOR = 0.4  # free text: learnability unknown until a student is trained
WEIGHTS = {"support": 0.3, "balance": 0.1, "learnability": 0.6}

# A fixed contrast set of paraphrased instructions embedded beside the user's templates:
# HDBSCAN never selects its root, so without other dense groups a user's only repeated
# task (its paraphrases amid one-offs) would come out as noise.
ANCHORS = (
    "Convert the quantities in this recipe to metric units: <input>",
    "Rewrite this recipe using grams and millilitres: <input>",
    "Change the measurements in the recipe below to metric. <input>",
    "Express this recipe's amounts in metric units: <input>",
    "Rewrite this sentence in the passive voice: <input>",
    "Turn the following sentence into passive voice. <input>",
    "Put this sentence into the passive: <input>",
    "Change this sentence from active to passive voice: <input>",
    "Count the vowels in this word: <input>",
    "How many vowels does the following word have? <input>",
    "Tell me the number of vowels in this word. <input>",
    "Give the vowel count of this word: <input>",
)


class TextEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class CandidateFound:
    """A repeated task: what it is, how often and how long it was seen, how distillable."""

    signature: str
    kind: Kind
    family: str
    support: int
    days: int
    first_at: float
    last_at: float
    score: float
    labels: dict[str, int]
    templates: dict[str, int]
    event_ids: list[int]
    components: dict[str, float | None] = field(default_factory=dict)
    prompt: dict[str, Any] = field(default_factory=dict)  # see prompt_detail

    def detail(self) -> dict[str, Any]:
        """The JSON kept in the `detail` column."""
        top = sorted(self.templates.items(), key=lambda kv: (-kv[1], kv[0]))
        hashed = self.family == "prompt"
        return {
            "family": self.family,
            "labels": self.labels,
            "templates": [
                {"signature": t, "count": c, **({"hash": template_hash(t)} if hashed else {})}
                for t, c in top[:MAX_TEMPLATES_KEPT]
            ],
            "template_count": len(self.templates),
            **self.prompt,
            **self.components,
            "event_ids": self.event_ids[-MAX_EVENT_IDS:],
        }


def find_candidates(
    observations: Sequence[Observation], encoder: TextEncoder, config: DetectorConfig
) -> list[CandidateFound]:
    """Group observations by template and paraphrase cluster; keep the groups seen at least
    `min_support` times on `min_days` distinct days. Best score first."""
    by_template: dict[tuple[str, str], list[Observation]] = defaultdict(list)
    for obs in observations:
        by_template[(obs.family, obs.signature)].append(obs)
    found: list[CandidateFound] = []
    for family in sorted({f for f, _ in by_template}):
        counts = {s: len(v) for (f, s), v in by_template.items() if f == family}
        if sum(counts.values()) < config.min_support:
            continue
        # File behaviours are coarse families already; only instructions have paraphrases.
        groups = (
            cluster_templates(counts, encoder, config.min_cluster_size)
            if family == "prompt"
            else [[s] for s in sorted(counts)]
        )
        for group in groups:
            members = [o for s in group for o in by_template[(family, s)]]
            if len(members) >= config.min_support and _days(members) >= config.min_days:
                found.append(_candidate(family, members, encoder, config))
    return sorted(found, key=lambda c: (-c.score, c.signature))


def cluster_templates(
    counts: dict[str, int], encoder: TextEncoder, min_cluster_size: int
) -> list[list[str]]:
    """Paraphrased templates as groups (HDBSCAN on unit vectors); noise stays alone."""
    ranked = sorted(counts, key=lambda s: (-counts[s], s))
    templates, rest = sorted(ranked[:MAX_CLUSTERED]), ranked[MAX_CLUSTERED:]
    singles = [[s] for s in rest]
    if len(templates) < min_cluster_size + 1:
        return [[s] for s in templates] + singles
    import hdbscan
    import numpy as np

    vectors = encoder.encode([*templates, *ANCHORS]).astype(np.float64)
    labels = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, metric="euclidean").fit_predict(
        vectors
    )[: len(templates)]
    clusters: dict[int, list[str]] = defaultdict(list)
    for template, label in zip(templates, labels, strict=True):
        if label < 0:
            singles.append([template])
        else:
            clusters[int(label)].append(template)
    return [*clusters.values(), *singles]


def _days(members: Sequence[Observation]) -> int:
    return len({datetime.fromtimestamp(o.at).date() for o in members})


def _candidate(
    family: str, members: list[Observation], encoder: TextEncoder, config: DetectorConfig
) -> CandidateFound:
    members = sorted(members, key=lambda o: (o.at, o.event_id or 0))
    templates = Counter(o.signature for o in members)
    # A prompt's instruction (shared, paraphrased) would drown what tells its inputs apart.
    labelled = [
        (o.input if family == "file" else variable_part(o.input), _label(o.outcome, family))
        for o in members
        if o.outcome is not None
    ]
    counts = Counter(label for _, label in labelled)
    kind, drawn = infer_kind(labelled, counts, config)
    support = len(members)
    components: dict[str, float | None] = {
        "support": support / (support + config.min_support),
        "balance": _balance(counts) if kind == "classify" else None,
        "cv_accuracy": None,
        "baseline": None,
    }
    if kind == "classify":
        accuracy, baseline = cross_validated_accuracy(labelled, encoder)
        components["cv_accuracy"], components["baseline"] = accuracy, baseline
        learn = 0.5
        if accuracy is not None and baseline < 1:  # skill over always guessing the majority
            learn = max(0.0, (accuracy - baseline) / (1 - baseline))
    else:
        learn = drawn if kind == "extract" else GENERATE_PRIOR
    components["learnability"] = learn
    parts = {k: components[k] for k in WEIGHTS if components[k] is not None}
    score = sum(WEIGHTS[k] * (v or 0.0) for k, v in parts.items()) / sum(WEIGHTS[k] for k in parts)
    signature = min(templates, key=lambda s: (-templates[s], s))
    return CandidateFound(
        signature=signature,
        kind=kind,
        family=family,
        support=support,
        days=_days(members),
        first_at=min(o.at for o in members),
        last_at=max(o.at for o in members),
        score=round(min(1.0, max(0.0, score)), 4),
        labels=dict(counts.most_common()) if kind == "classify" else {},
        templates=dict(templates),
        event_ids=sorted(o.event_id for o in members if o.event_id is not None),
        components=components,
        prompt=prompt_detail(signature, members) if family == "prompt" else {},
    )


def prompt_detail(signature: str, members: Sequence[Observation]) -> dict[str, Any]:
    """What a prompt candidate records beside its templates: the representative template and
    its hash, where the instruction sits, the instructions as written, the models called."""
    where = Counter(o.instruction_at for o in members if o.instruction_at)
    said = Counter(o.instruction for o in members if o.instruction)
    models = Counter(o.model for o in members if o.model)
    return {
        "template": signature,
        "template_hash": template_hash(signature),
        "instruction_at": where.most_common(1)[0][0] if where else "user",
        "instructions": [text for text, _ in said.most_common(MAX_INSTRUCTIONS_KEPT)],
        "models": dict(models.most_common()),
    }


def _label(outcome: str, family: str) -> str:
    """A folder is a label as it is; a model's answers that differ only in case, spacing or
    end punctuation are one label."""
    return outcome if family == "file" else label_key(outcome)


def infer_kind(
    labelled: Sequence[tuple[str, str]], counts: Counter[str], config: DetectorConfig
) -> tuple[Kind, float]:
    """classify / extract / generate, and the share of outcomes drawn from their inputs."""
    total = len(labelled)
    recurring = [c for c in counts.values() if c >= config.min_label_count]
    if (
        total
        and len(counts) <= config.max_labels
        and len(recurring) >= 2
        and sum(recurring) >= LABEL_COVERAGE * total
    ):
        return "classify", 0.0
    drawn = sum(_drawn_from(out, text) for text, out in labelled) / total if total else 0.0
    return ("extract" if drawn >= EXTRACT_SHARE else "generate"), drawn


def _drawn_from(outcome: str, text: str) -> bool:
    """Whether the outcome's words come from the input; of a JSON outcome, only its values'
    words count (its keys are the schema, not the input)."""
    words = re.findall(r"\w+", " ".join(_values(outcome)).casefold())
    if not words:
        return False
    present = set(re.findall(r"\w+", text.casefold()))
    return sum(w in present for w in words) >= TOKEN_SHARE * len(words)


def _values(outcome: str) -> list[str]:
    """The leaf values of a JSON outcome, or the outcome itself when it is not JSON."""
    text = outcome.strip()
    if not text.startswith(("{", "[")):
        return [outcome]
    try:
        data = json.loads(text)
    except ValueError:
        return [outcome]
    found: list[str] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None and not isinstance(item, bool):
            found.append(str(item))
    return found


def _balance(counts: Counter[str]) -> float:
    """Normalised entropy of the label counts: 1 when balanced, 0 when one label."""
    total = sum(counts.values())
    if len(counts) < 2:
        return 0.0
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    return entropy / math.log(len(counts))


def cross_validated_accuracy(
    labelled: Sequence[tuple[str, str]], encoder: TextEncoder
) -> tuple[float | None, float]:
    """Stratified k-fold accuracy of logistic regression on input embeddings, and the
    majority-label accuracy it must beat. Distinct inputs only (the latest label wins)."""
    latest = dict(labelled)
    counts = Counter(latest.values())
    items = [(text, label) for text, label in latest.items() if counts[label] >= 2]
    items = items[:: max(1, math.ceil(len(items) / MAX_CV))]
    used = Counter(label for _, label in items)
    baseline = max(used.values()) / len(items) if items else 1.0
    folds = min(5, min(used.values())) if len(used) >= 2 else 0
    if folds < 2:
        return None, baseline
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    vectors = encoder.encode([text for text, _ in items])
    scores = cross_val_score(
        LogisticRegression(C=10.0, max_iter=2000),
        vectors,
        [label for _, label in items],
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=0),
    )
    return float(scores.mean()), baseline


def save_candidates(store: Store, found: Sequence[CandidateFound]) -> list[int]:
    """Upsert by signature (or by a shared template, when the representative changed);
    an existing row keeps its state and task. Returns the row ids in order."""
    now, ids = time.time(), list[int]()
    with store.transaction() as db:
        rows = db.execute("SELECT id, signature, detail FROM candidates ORDER BY id").fetchall()
        by_signature = {str(r[1]): int(r[0]) for r in rows}
        by_template: dict[str, int] = {}
        for row in rows:
            for entry in json.loads(row[2]).get("templates", []):
                by_template.setdefault(str(entry["signature"]), int(row[0]))
        for cand in found:
            options = [by_signature.get(cand.signature)]
            options += [by_template.get(t) for t in sorted(cand.templates)]
            row_id = next((i for i in options if i is not None and i not in ids), None)
            values = (cand.kind, cand.support, cand.days, cand.score, json.dumps(cand.detail()))
            if row_id is None:
                cursor = db.execute(
                    "INSERT INTO candidates (signature, kind, support, days, score, detail,"
                    " state, first_at, last_at, updated) VALUES (?, ?, ?, ?, ?, ?, 'new', ?, ?, ?)",
                    (cand.signature, *values, cand.first_at, cand.last_at, now),
                )
                row_id = int(cursor.lastrowid or 0)
            else:
                db.execute(
                    "UPDATE candidates SET kind = ?, support = ?, days = ?, score = ?, detail = ?,"
                    " first_at = MIN(first_at, ?), last_at = MAX(last_at, ?), updated = ?"
                    " WHERE id = ?",
                    (*values, cand.first_at, cand.last_at, now, row_id),
                )
            ids.append(row_id)
    return ids


def observations_from_store(
    store: Store, since: float | None = None, home: Path | None = None
) -> list[Observation]:
    """What the stored file moves and LLM calls say, oldest first."""
    found: list[Observation] = []
    for kind in KINDS_OBSERVED:
        for event in store.events(kind, limit=MAX_EVENTS, since=since):
            obs = observe(event, home)
            if obs is not None:
                found.append(obs)
    return sorted(found, key=lambda o: (o.at, o.event_id or 0))


def run_detection(
    store: Store, config: Config | DetectorConfig, encoder: TextEncoder | None = None
) -> list[CandidateFound]:
    """Read the stored events, find the repeated tasks, save them as candidates."""
    detector = config.detector if isinstance(config, Config) else config
    if encoder is None:
        from stillroom.service.encoder import Encoder

        encoder = Encoder(store=store)
    found = find_candidates(observations_from_store(store), encoder, detector)
    save_candidates(store, found)
    return found


def main() -> int:
    """`python -m stillroom.daemon.detector`: detect once, print one line per candidate."""
    config, _ = load_config()
    with Store(Paths.resolve().ensure().database) as store:
        found = run_detection(store, config)
    for cand in found:
        print(
            f"{cand.kind:<8} score {cand.score:.2f}  {cand.support} events on {cand.days} days"
            f"  {cand.signature}"
        )
    if not found:
        print("no repeated tasks yet", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
