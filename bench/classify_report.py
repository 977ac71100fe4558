"""The tables and the summary of bench/classify.py: one row per run, one per data set and N
over the seeds, and where and on what it ran."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


COLUMNS = [
    ("data set", 9),
    ("N", 3),
    ("seed", 4),
    ("handed", 6),
    ("tr/cal/te", 12),
    ("forced", 6),
    ("ref LR", 6),
    ("thresh", 6),
    ("cover", 6),
    ("err ans", 7),
    ("bound", 6),
    ("holds", 5),
    ("p50 ms", 6),
    ("p95 ms", 6),
    ("distill s", 9),
    ("fresh", 5),
    ("train s", 7),
]


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def row_cells(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return [r["dataset"], str(r["n"]), str(r["seed"]), "error: " + r["error"]]
    s, t, g = r["split"], r["test_file"], r["guarantee"]
    return [
        r["dataset"],
        str(r["n"]),
        str(r["seed"]),
        str(r["handed"]),
        f"{s['train']}/{s['calibration']}/{s['test']}",
        pct(t["forced"]),
        pct(r["reference_all_n"]["forced"]),
        "-" if g["threshold"] is None else f"{g['threshold']:.3f}",
        pct(t["coverage"]),
        pct(t["error_answered"]),
        pct(g["bound"]) if g["threshold"] is not None else "-",
        "yes" if t["holds"] else "NO",
        f"{r['latency_ms']['p50']:.1f}",
        f"{r['latency_ms']['p95']:.1f}",
        f"{r['distill_seconds']:.1f}",
        "-" if r["fresh_embeddings"] is None else str(r["fresh_embeddings"]),
        f"{r['train_seconds']:.1f}",
    ]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["  ".join(name.rjust(width) for name, width in COLUMNS)]
    for r in rows:
        cells = row_cells(r)
        lines.append("  ".join(c.rjust(w) for c, (_, w) in zip(cells, COLUMNS, strict=False)))
    return "\n".join(lines)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean (and spread) over seeds for each data set and N."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if "error" not in r:
            groups[(r["dataset"], r["n"])].append(r)
    out = []
    for (dataset, n), rs in groups.items():

        def stat(values: list[float]) -> dict[str, float]:
            return {
                "mean": round(statistics.fmean(values), 4),
                "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            }

        answered = [r["test_file"]["error_answered"] for r in rs]
        out.append(
            {
                "dataset": dataset,
                "n": n,
                "seeds": len(rs),
                "forced": stat([r["test_file"]["forced"] for r in rs]),
                "sure80": stat([r["test_file"]["sure80"] for r in rs]),
                "forced_balanced": stat([r["test_file"]["forced_balanced"] for r in rs]),
                "reference_forced": stat([r["reference_all_n"]["forced"] for r in rs]),
                "reference_sure80": stat([r["reference_all_n"]["sure80"] for r in rs]),
                "coverage": stat([r["test_file"]["coverage"] for r in rs]),
                "error_answered": stat([a for a in answered if a is not None])
                if any(a is not None for a in answered)
                else None,
                "with_threshold": sum(r["guarantee"]["threshold"] is not None for r in rs),
                # Among the runs that found a threshold (the rest answer nothing).
                "holds": sum(
                    r["test_file"]["holds"] for r in rs if r["guarantee"]["threshold"] is not None
                ),
                "latency_p50_ms": stat([r["latency_ms"]["p50"] for r in rs]),
                "latency_p95_ms": stat([r["latency_ms"]["p95"] for r in rs]),
                "distill_seconds": stat([r["distill_seconds"] for r in rs]),
            }
        )
    return out


def summary_table(summary: list[dict[str, Any]]) -> str:
    head = (
        f"{'data set':>9}  {'N':>3}  {'seeds':>5}  {'forced':>13}  {'ref LR':>13}  "
        f"{'sure80':>6}  {'cover':>6}  {'err ans':>7}  {'holds':>5}  {'p50/p95 ms':>11}"
    )
    lines = [head]
    for s in summary:
        err = s["error_answered"]
        lines.append(
            f"{s['dataset']:>9}  {s['n']:>3}  {s['seeds']:>5}  "
            f"{pct(s['forced']['mean']):>6} ±{100 * s['forced']['sd']:4.1f}  "
            f"{pct(s['reference_forced']['mean']):>6} ±{100 * s['reference_forced']['sd']:4.1f}  "
            f"{pct(s['sure80']['mean']):>6}  {pct(s['coverage']['mean']):>6}  "
            f"{pct(err['mean'] if err else None):>7}  "
            f"{s['holds']}/{s['with_threshold']:<3}  "
            f"{s['latency_p50_ms']['mean']:5.1f}/{s['latency_p95_ms']['mean']:<5.1f}"
        )
    return "\n".join(lines)


def machine() -> str:
    import psutil

    ram = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores, {ram:.0f} GiB RAM, {platform.machine()}, {platform.system()}"


def commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()
