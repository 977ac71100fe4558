"""The savings ledger: per learned prompt task, how many calls were answered locally, forwarded
and audited, how often an audit disagreed, how fast each path was, and what the local
answers would have cost at the provider.

Derived from the recorded llm.call events (answered_by, task, latency, tokens) and the
audited predictions, so it needs no table of its own.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stillroom.config import Price
from stillroom.pricing import cost_usd, estimate_tokens
from stillroom.registry import Registry
from stillroom.store import Store

LOCAL_MODEL = "stillroom/"


@dataclass
class TaskSavings:
    """One task's line in the ledger. `forwarded` counts every call that went to the
    provider, audits included; `saved_usd` is None when no model of its calls has a price."""

    task: str
    local: int = 0
    forwarded: int = 0
    audited: int = 0
    disagreements: int = 0
    local_latency: list[float] = field(default_factory=list, repr=False)
    forwarded_latency: list[float] = field(default_factory=list, repr=False)
    saved_usd: float | None = None

    @property
    def local_p50_ms(self) -> float | None:
        return statistics.median(self.local_latency) if self.local_latency else None

    @property
    def forwarded_p50_ms(self) -> float | None:
        return statistics.median(self.forwarded_latency) if self.forwarded_latency else None


@dataclass(frozen=True)
class _Call:
    task: str
    by: str
    latency_ms: float | None
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    status: int | None


def ledger(
    store: Store, prices: Mapping[str, Price], since: float | None = None
) -> list[TaskSavings]:
    """The ledger of every task that matched a call (since a time), by task name."""
    by_task: dict[str, list[_Call]] = defaultdict(list)
    for call in _calls(store, since):
        by_task[call.task].append(call)
    specs = {t.name: t.spec for t in Registry(store).tasks()}
    rows: dict[str, TaskSavings] = {}
    for name, calls in by_task.items():
        row = rows[name] = TaskSavings(name)
        for call in calls:
            if call.by == "local":
                row.local += 1
                _add(row.local_latency, call.latency_ms)
            else:
                row.forwarded += 1
                row.audited += call.by == "audit"
                _add(row.forwarded_latency, call.latency_ms)
        row.saved_usd = _saved(calls, specs.get(name, {}), prices)
    for name, count in _disagreements(store, since).items():
        rows.setdefault(name, TaskSavings(name)).disagreements = count
    return sorted(rows.values(), key=lambda r: r.task)


def _calls(store: Store, since: float | None) -> list[_Call]:
    """The llm.call events a task matched, read with SQLite's JSON functions (no parsing of
    whole payloads)."""
    fields = [
        "task",
        "answered_by",
        "latency_ms",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "status",
    ]
    columns = ", ".join(f"json_extract(payload, '$.{f}')" for f in fields)
    rows = store.query(
        f"SELECT {columns} FROM events WHERE kind = 'llm.call' AND at >= ?"
        " AND json_extract(payload, '$.task') IS NOT NULL ORDER BY id",
        [since if since is not None else 0.0],
    )
    return [
        _Call(str(r[0]), str(r[1] or "upstream"), _num(r[2]), str(r[3] or ""), r[4], r[5], r[6])
        for r in rows
    ]


def _disagreements(store: Store, since: float | None) -> dict[str, int]:
    rows = store.query(
        "SELECT t.name, COUNT(*) FROM predictions p JOIN model_versions v ON v.id = p.version_id"
        " JOIN tasks t ON t.id = v.task_id WHERE p.mode = 'audit' AND p.at >= ?"
        " AND p.truth IS NOT NULL AND p.answer IS NOT NULL AND p.truth != p.answer"
        " GROUP BY t.name",
        [since if since is not None else 0.0],
    )
    return {str(r[0]): int(r[1]) for r in rows}


def _saved(calls: list[_Call], spec: dict[str, Any], prices: Mapping[str, Price]) -> float | None:
    """What the local answers would have cost forwarded: each one's prompt tokens, and the
    tokens of the teacher's typical answer (the median of its recorded answers, else of the
    labels as it writes them), at the price of the model the call asked for."""
    answers = [
        c.completion_tokens
        for c in calls
        if c.by != "local" and c.status == 200 and isinstance(c.completion_tokens, int)
    ]
    labels = [estimate_tokens(str(text)) for text in (spec.get("labels") or {}).values()]
    typical = int(statistics.median(answers or labels or [1]))
    models = [str(m) for m in spec.get("models") or []]
    saved: float | None = None
    for call in calls:
        if call.by != "local":
            continue
        model = call.model if not call.model.startswith(LOCAL_MODEL) else ""
        model = model or (models[0] if models else "")
        cost = cost_usd(prices, model, call.prompt_tokens or 0, typical)
        if cost is not None:
            saved = (saved or 0.0) + cost
    return saved


def since_days(days: float | None) -> float | None:
    return None if days is None else time.time() - days * 86400


def _add(values: list[float], value: float | None) -> None:
    if value is not None:
        values.append(value)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
