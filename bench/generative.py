"""Generative students: us_address_parsing (extraction) and scitldr (summaries).

For each size N, N examples (the data set's gold answer standing in for an ideal teacher) are
handed to stillroom as a task in a throwaway STILLROOM_HOME and distilled as the product does
(drawn at random from the train file; a student trained on about half of them, calibration
and test on the rest): for addresses, whose
teacher only copies, a CRF tagger; with `--student lora`, and for summaries, an Unsloth LoRA
exported to GGUF and answered through llama.cpp. The student is then made to answer the data
set's own test file: exact match and field F1 for addresses, ROUGE-L and embedding similarity
for summaries, with the share a guarantee lets it answer and its error there. Training time
per 100 examples and answer latency are reported beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_data import DATA

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TASKS = {
    "addresses": {
        "kind": "extract",
        "instruction": "Parse this US address into its labelled fields as JSON.",
        "folder": "us_address_parsing",
    },
    "tldr": {
        "kind": "generate",
        "instruction": "Summarize this paper abstract in one sentence.",
        "folder": "scitldr",
    },
}


def rows(name: str, split: str) -> list[tuple[str, str]]:
    """(input, gold answer) pairs; a TLDR takes the abstract and its first summary."""
    path = DATA / TASKS[name]["folder"] / f"{split}.jsonl"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        if name == "addresses":
            out.append((d["text"], json.dumps(d["fields"], ensure_ascii=False)))
        else:
            out.append((" ".join(d["source"]), d["target"][0].strip()))
    return out


def run_one(
    name: str, n: int, test: list[tuple[str, str]], epochs: float | None, student: str
) -> dict[str, Any]:
    from stillroom.config import RuntimeConfig
    from stillroom.paths import Paths
    from stillroom.registry import Registry
    from stillroom.service.classifier import ClassifierStudent
    from stillroom.service.engine import Engine
    from stillroom.service.judge import Thresholds, judge
    from stillroom.service.student_models import load_student
    from stillroom.store import Store
    from stillroom.trainers.generative import distill_generative
    from stillroom.trainers.lora import LoraSettings

    spec = TASKS[name]
    # A random sample, not the file's first rows: the train file is grouped by where its
    # addresses came from, and its first few hundred are a narrow slice of the rest.
    train = random.Random(0).sample(pool := rows(name, "train"), min(n, len(pool)))
    with tempfile.TemporaryDirectory(prefix="stillroom-gen-") as tmp:
        os.environ["STILLROOM_HOME"] = str(Path(tmp) / "home")
        paths = Paths.resolve().ensure()
        cache = Path(os.environ.get("STILLROOM_BENCH_CACHE", HERE / "results" / ".cache"))
        (paths.cache_dir).parent.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        paths.cache_dir.symlink_to(cache)  # the HF copy of the base is built once per machine
        with Store(paths.database) as store:
            registry = Registry(store)
            task = registry.create_task(
                name,
                str(spec["kind"]),
                instruction=str(spec["instruction"]),
                spec={"target": 0.1, "student": student},
            )
            registry.add_examples(task, [(i, o, "teacher", None) for i, o in train])
            settings = LoraSettings() if epochs is None else LoraSettings(epochs=epochs)
            started = time.perf_counter()
            result = distill_generative(registry, task, paths, RuntimeConfig(), settings=settings)
            distill_s = time.perf_counter() - started
            engine = Engine(paths, RuntimeConfig())
            model = load_student(result.version, engine)
            assert not isinstance(model, ClassifierStudent)
            answers = model.forced([i for i, _ in test])
            verdict = judge(
                str(spec["kind"]),
                [a.text for a in answers],
                [o for _, o in test],
                engine.embed,
                Thresholds(),
            )
            threshold = result.guarantee.threshold
            answered = [
                c
                for a, c in zip(answers, verdict.correct, strict=True)
                if threshold is not None and a.confidence >= threshold
            ]
            engine.close()
    m = result.version.metrics
    return {
        "task": name,
        "n": n,
        "student": result.version.student,
        "trained_on": m["split"]["train"],
        "epochs": settings.epochs if "train_steps" in m else None,
        "correct": round(sum(verdict.correct) / len(test), 4),
        **{k: round(statistics.fmean(v), 4) for k, v in verdict.scores.items()},
        "coverage": round(len(answered) / len(test), 4),
        "error_answered": round(1 - sum(answered) / len(answered), 4) if answered else None,
        "bound": result.guarantee.bound if threshold is not None else None,
        "train_s": m["train_seconds"],
        "train_s_per_100": round(m["train_seconds"] * 100 / max(1, m["split"]["train"]), 1),
        "distill_s": round(distill_s, 1),
        "answer_ms_p50": round(statistics.median(a.seconds for a in answers) * 1000, 1),
        "device": m.get("train_device", "cpu"),
        "test_size": len(test),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=sorted(TASKS), action="append")
    parser.add_argument("--n", type=int, action="append", help="Examples handed in.")
    parser.add_argument("--test", type=int, default=146, help="Test rows answered.")
    parser.add_argument("--epochs", type=float, help="Default: the product's (LoraSettings).")
    parser.add_argument(
        "--student", choices=["auto", "tagger", "lora"], default="auto", help="As the product."
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "generative.json")
    args = parser.parse_args()
    results = []
    for name in args.task or ["addresses"]:
        # Test texts that are also train texts (8 of the 146 addresses) are left out.
        seen = {text.lower() for text, _ in rows(name, "train")}
        test = [r for r in rows(name, "test") if r[0].lower() not in seen][: args.test]
        for n in args.n or [100]:
            print(f"-- {name} N={n}", flush=True)
            results.append(run_one(name, n, test, args.epochs, args.student))
            print(json.dumps(results[-1]), flush=True)
    header = (
        f"{'task':<10} {'student':<12} {'N':>5} {'train':>5} {'correct':>8} {'F1/ROUGE':>9}"
        f" {'sim':>6} {'cover':>6} {'err':>6} {'s/100':>6} {'ms/ans':>7}"
    )
    print(header)
    for r in results:
        second = r.get("field_f1", r.get("rouge_l"))
        print(
            f"{r['task']:<10} {r['student']:<12} {r['n']:>5} {r['trained_on']:>5}"
            f" {r['correct']:>8.1%} {second:>9.3f} {r.get('similarity', float('nan')):>6.3f}"
            f" {r['coverage']:>6.1%}"
            f" {r['error_answered'] if r['error_answered'] is not None else '-':>6}"
            f" {r['train_s_per_100']:>6} {r['answer_ms_p50']:>7}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores"}
    args.out.write_text(json.dumps({**summary, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
