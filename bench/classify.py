"""Few-shot classification through the real pipeline: N labelled examples per class in,
a distilled student and its guarantee out, judged on the data set's own test file.

    python bench/classify.py [--tier quick|full] [--out bench/results/classify-quick.json]
                             [--datasets banking77 linguist] [--n 8 16 32] [--seeds 0 1 2]
                             [--cache ~/.cache/stillroom-bench/embeddings.db]

For each data set, N and seed it samples N examples per class (seeded; a class with fewer
gives what it has) from the data set's TRAIN file, hands them to stillroom as a user's
examples in a fresh STILLROOM_HOME, and runs `distill_classifier`, which makes its own
train / calibration / test split of what it is handed. The student is then judged on the
data set's TEST file, which stillroom never saw:

- forced agreement: its best label on every test input, abstentions included;
- at the calibrated threshold: coverage, error among answered, and whether that error stays
  within the bound the guarantee states (the one-sided 95% Clopper-Pearson bound from
  calibration);
- batch-1 latency (encode + predict of one input, no embedding cache), p50 / p95;
- distill wall time (embedding included) and the version's train_seconds.

As a reference it also reports frozen MiniLM + logistic regression (stillroom's own head,
C=10) trained on ALL the handed examples with nothing held out.

The data set's gold label stands in for the teacher's answer (an ideal teacher). Embeddings
are cached in a store outside the repository (--cache; '' turns it off), so reruns are fast;
"fresh" counts the handed examples that had to be embedded in this run. Exits nonzero only
when something crashes, never for a missed goal.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from bench_data import DATASETS, load, sample, write_json
from classify_report import commit, machine, pct, summarise, summary_table, table

from stillroom.errors import TaskError
from stillroom.paths import Paths
from stillroom.registry import Registry
from stillroom.service.classifier import ClassifierStudent
from stillroom.service.encoder import Encoder
from stillroom.store import Store
from stillroom.trainers.classifier import train_head
from stillroom.trainers.distill import distill_classifier

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIERS = {
    "quick": {"datasets": ["banking77", "linguist"], "n": [16], "seeds": [0]},
    "full": {"datasets": ["banking77", "linguist"], "n": [8, 16, 32], "seeds": [0, 1, 2]},
}
TARGET = 0.05
LATENCY_INPUTS = 200
SURE_SHARE = 0.8  # "accuracy on the 80% it is most sure of", as in the reference
GOAL = {"dataset": "banking77", "n": 16, "forced": 0.92}
REFERENCE = (
    "frozen MiniLM + logistic regression: 88.3% at 16 per class on banking77,"
    " 95.8% on the 80% it is most sure of"
)
TEACHER_NOTE = (
    "Gold labels stand in for the teacher's answers (an ideal teacher); figures measure how"
    " well a student reproduces the labels, not a real teacher."
)


def sure_accuracy(confidence: np.ndarray, correct: np.ndarray, share: float = SURE_SHARE) -> float:
    """Accuracy on the `share` of inputs with the highest confidence."""
    keep = max(1, math.ceil(len(confidence) * share))
    order = np.argsort(-confidence, kind="stable")[:keep]
    return float(correct[order].mean())


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(seconds) * 1000.0, q)), 2)


def cached_count(store: Store | None) -> int:
    if store is None:
        return 0
    return int(store.query("SELECT COUNT(*) FROM embeddings")[0][0])


def run_one(
    dataset: str,
    n: int,
    seed: int,
    cache: Store | None,
    test_rows: list[tuple[str, str]],
    test_vectors: np.ndarray,
) -> dict[str, Any]:
    handed = sample(load(dataset, "train"), n, seed)
    encoder = Encoder(store=cache)
    with tempfile.TemporaryDirectory(prefix="stillroom-bench-") as home:
        os.environ["STILLROOM_HOME"] = home
        paths = Paths.resolve().ensure()
        store = Store(paths.database)
        try:
            registry = Registry(store)
            task = registry.create_task(
                f"bench-{dataset}-{n}-s{seed}", "classify", spec={"target": TARGET}
            )
            registry.add_examples(task, [(text, label, "user", None) for text, label in handed])
            before = cached_count(cache)
            started = time.perf_counter()
            try:
                distilled = distill_classifier(registry, task, encoder, paths)
            except TaskError as exc:
                return {"dataset": dataset, "n": n, "seed": seed, "error": str(exc)}
            distill_seconds = time.perf_counter() - started
            fresh = cached_count(cache) - before if cache is not None else None
            version, guarantee = distilled.version, distilled.guarantee
            student = ClassifierStudent(version)
            own_encoder = student.encoder_path is not None
            texts = [t for t, _ in test_rows]
            vectors = student.encode(texts, cache) if own_encoder else test_vectors
            result = evaluate(student, vectors, [label for _, label in test_rows], guarantee.bound)
            latency = measure_latency(student, test_rows, own_encoder)
        finally:
            store.close()
            os.environ.pop("STILLROOM_HOME", None)

    # Reference: the same frozen encoder and head on every handed example, nothing held out.
    texts = list(dict.fromkeys(t for t, _ in handed))
    label_of = dict(handed)
    head = train_head(encoder.encode(texts), [label_of[t] for t in texts])
    probs = head.probabilities(test_vectors)
    ref_best = np.array([head.labels[j] for j in probs.argmax(axis=1)])
    ref_correct = ref_best == np.array([label for _, label in test_rows])

    metrics = version.metrics
    return {
        "dataset": dataset,
        "n": n,
        "seed": seed,
        "handed": len(handed),
        "distinct": metrics["examples"],
        "split": metrics["split"],
        "own_encoder": own_encoder,
        "encoder_bar": metrics.get("bar"),
        "setfit": metrics.get("setfit"),
        "passed": distilled.passed,
        "status": version.status,
        "internal": {
            "accuracy_calibration": metrics.get("accuracy_calibration"),
            "accuracy_test": metrics.get("accuracy_test"),
            "test_check": asdict(guarantee.test) if guarantee.test else None,
        },
        "guarantee": {
            "target": guarantee.target,
            "threshold": guarantee.threshold,
            "radius": guarantee.radius,
            "calibration_answered": guarantee.answered,
            "calibration_errors": guarantee.errors,
            "calibration_coverage": guarantee.coverage,
            "bound": guarantee.bound,
            "needed": guarantee.needed,
        },
        "test_file": result,
        "reference_all_n": {
            "forced": round(float(ref_correct.mean()), 4),
            "sure80": round(sure_accuracy(probs.max(axis=1), ref_correct), 4),
        },
        "latency_ms": latency,
        "distill_seconds": round(distill_seconds, 2),
        "train_seconds": metrics.get("train_seconds"),
        "fresh_embeddings": fresh,
    }


def evaluate(
    student: ClassifierStudent, vectors: np.ndarray, gold: list[str], bound: float
) -> dict[str, Any]:
    preds = student.predict(vectors)
    gold_arr = np.array(gold)
    best = np.array([p.best for p in preds])
    correct = best == gold_arr
    confidence = np.array([p.confidence for p in preds])
    answered = np.array([not p.abstained for p in preds])
    n_answered = int(answered.sum())
    errors = int((answered & ~correct).sum())
    rate = errors / n_answered if n_answered else None
    reasons: dict[str, int] = defaultdict(int)
    for p in preds:
        if p.abstained:
            reasons[(p.reason or "").split(" (")[0].split(";")[0]] += 1
    labels, counts = np.unique(gold_arr, return_counts=True)
    recall = [float(correct[gold_arr == label].mean()) for label in labels]
    return {
        "size": len(gold),
        "forced": round(float(correct.mean()), 4),
        # Context for skewed test files (linguist is ~72% programming): the sampling is
        # balanced, the test file is not.
        "forced_balanced": round(statistics.fmean(recall), 4),
        "majority_baseline": round(float(counts.max() / len(gold)), 4),
        "sure80": round(sure_accuracy(confidence, correct), 4),
        "answered": n_answered,
        "errors": errors,
        "coverage": round(n_answered / len(gold), 4),
        "error_answered": round(rate, 4) if rate is not None else None,
        # The stated bound holds on the test file when the error among answered stays
        # within it (vacuously when nothing is answered).
        "holds": rate is None or rate <= bound,
        "within_target": rate is None or rate <= TARGET,
        "abstain_reasons": dict(reasons),
    }


def measure_latency(
    student: ClassifierStudent, test_rows: list[tuple[str, str]], own_encoder: bool
) -> dict[str, float]:
    """Batch-1 encode + predict with no embedding cache (the encoder model stays loaded)."""
    plain = student.encoder() if own_encoder else Encoder()  # no store: embedded afresh
    encode = plain.encode
    rows = test_rows[:]
    random.Random(0).shuffle(rows)
    texts = [t for t, _ in rows[:LATENCY_INPUTS]]
    for text in texts[:5]:  # warm-up
        student.predict(encode([text]))
    total, predict_only = [], []
    for text in texts:
        start = time.perf_counter()
        vector = encode([text])
        mid = time.perf_counter()
        student.predict(vector)
        end = time.perf_counter()
        total.append(end - start)
        predict_only.append(end - mid)
    return {
        "inputs": len(texts),
        "p50": percentile_ms(total, 50),
        "p95": percentile_ms(total, 95),
        "predict_p50": percentile_ms(predict_only, 50),
        "predict_p95": percentile_ms(predict_only, 95),
    }


# -- report -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=sorted(TIERS), default="quick")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS))
    parser.add_argument("--n", nargs="+", type=int)
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--cache",
        default=str(Path.home() / ".cache" / "stillroom-bench" / "embeddings.db"),
        help="embedding cache database ('' for none)",
    )
    args = parser.parse_args()
    tier = TIERS[args.tier]
    datasets = args.datasets or tier["datasets"]
    ns = args.n or tier["n"]
    seeds = args.seeds if args.seeds is not None else tier["seeds"]
    out = args.out or HERE / "results" / f"classify-{args.tier}.json"

    began = time.perf_counter()
    cache = Store(Path(args.cache).expanduser()) if args.cache else None
    rows: list[dict[str, Any]] = []
    try:
        for dataset in datasets:
            test_rows = load(dataset, "test")
            start = time.perf_counter()
            test_vectors = Encoder(store=cache).encode([t for t, _ in test_rows])
            print(
                f"{dataset}: {len(test_rows)} test inputs embedded in"
                f" {time.perf_counter() - start:.1f} s",
                flush=True,
            )
            for n in ns:
                for seed in seeds:
                    r = run_one(dataset, n, seed, cache, test_rows, test_vectors)
                    rows.append(r)
                    print(table([r]).splitlines()[1], flush=True)
    finally:
        if cache is not None:
            cache.close()
    wall = time.perf_counter() - began

    summary = summarise(rows)
    goal_rows = [s for s in summary if (s["dataset"], s["n"]) == (GOAL["dataset"], GOAL["n"])]
    goal = {
        "forced_at_least": GOAL["forced"],
        "measured": goal_rows[0]["forced"]["mean"] if goal_rows else None,
        "met": bool(goal_rows) and goal_rows[0]["forced"]["mean"] >= GOAL["forced"],
        "bound_holds_everywhere": all(r["test_file"]["holds"] for r in rows if "error" not in r),
    }
    result = {
        "benchmark": "classify",
        "tier": args.tier,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "python": platform.python_version(),
        "commit": commit(),
        "note": TEACHER_NOTE,
        "setup": {
            "datasets": {d: "/".join(DATASETS[d]) for d in datasets},
            "n_per_class": ns,
            "seeds": seeds,
            "target": TARGET,
            "delta": 0.05,
            "latency_inputs": LATENCY_INPUTS,
            "reference": "stillroom's head (sklearn LogisticRegression, C=10) on the frozen"
            " encoder, trained on every handed example with nothing held out",
            "issue_reference": REFERENCE,
        },
        "goal": goal,
        "wall_seconds": round(wall, 1),
        "summary": summary,
        "runs": rows,
    }
    write_json(out, result)

    print()
    print(TEACHER_NOTE)
    print(table(rows))
    if len(seeds) > 1:
        print()
        print(summary_table(summary))
    print(
        f"\ngoal (>= {pct(GOAL['forced'])} forced at 16/class on banking77):"
        f" {pct(goal['measured'])} -> {'met' if goal['met'] else 'not met'};"
        f" stated bound holds on every test file: {goal['bound_holds_everywhere']}"
    )
    print(f"wall {wall:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
