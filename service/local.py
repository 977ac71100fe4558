"""Local answers: a gateway call that matches a learned prompt task is answered by its student
when an accepted (active) version is sure, and forwarded to the provider otherwise.

A call matches a task by the hash of its template (its instruction with the inputs masked),
or failing that by the closeness of its template to the task's in embedding. A share of the
confident calls is forwarded anyway as an audit: the provider's answer is compared with the
student's, and a task whose audited error breaks its bound pauses itself. A shadow version
never answers: it predicts on forwarded calls so its live agreement can earn a proposal.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stillroom.binomial import breaks_bound
from stillroom.config import Config
from stillroom.errors import ModelError, TaskError
from stillroom.predictions import live_stats, record
from stillroom.prompts import INPUT, PromptShape, label_key, prompt_shape
from stillroom.registry import ModelVersion, Registry, Task
from stillroom.service.gateway.answerer import Decision, LocalReply
from stillroom.service.judge import Thresholds, judge
from stillroom.service.students import Answer, StudentClient
from stillroom.store import Store

log = logging.getLogger("stillroom.service")

REFRESH_SECONDS = 5.0  # how stale the task table may get (accepting a task shows within it)
# MiniLM puts a paraphrase of another task ("Summarise this ticket") near 0.7 of a ticket
# router's template; only rewordings of the same instruction reach this.
MATCH_COSINE = 0.85
MAX_PENDING = 2048  # decisions waiting for their settle (a failed forward never settles)
MAX_EMBEDDED = 1024
TOOLS = ("tools", "functions", "tool_choice", "function_call")
OnPause = Callable[[str, str], None]


@dataclass(frozen=True)
class PromptTask:
    """A learned prompt task as matching needs it: its templates by hash, the models its
    calls went to, each label as the teacher wrote it, and its serving versions."""

    task: Task
    active: ModelVersion | None
    shadow: ModelVersion | None
    templates: dict[str, str]
    models: frozenset[str]
    labels: dict[str, str]
    history: bool

    @property
    def name(self) -> str:
        return self.task.name

    def render(self, label: str) -> str:
        """The answer as the teacher writes it ("Billing." rather than the key "billing")."""
        return self.labels.get(label, label)


@dataclass(frozen=True)
class TaskTable:
    tasks: list[PromptTask]
    by_hash: dict[str, PromptTask]
    paused: bool  # `stillroom pause`: nothing is answered locally
    at: float


@dataclass(frozen=True)
class _Pending:
    """What settle needs of a forwarded call: the task, the student's input, and the active
    version's answer when it was asked (`mode` is how it is recorded)."""

    task: PromptTask
    text: str
    answer: Answer | None
    mode: str
    uniform: bool = True  # False: forwarded because the student abstained (train only)


class TaskAnswerer:
    """The gateway's Answerer for learned prompt tasks (see service/gateway/answerer.py)."""

    def __init__(
        self,
        store: Store,
        students: StudentClient,
        config: Config,
        *,
        rng: random.Random | None = None,
        on_pause: OnPause | None = None,
    ) -> None:
        self.store, self.students, self.config = store, students, config
        self.registry = Registry(store)
        self.rng = rng or random.Random()
        self.on_pause = on_pause
        self._lock = threading.Lock()
        self._table: TaskTable | None = None
        self._pending: OrderedDict[int, tuple[Decision, _Pending]] = OrderedDict()
        self._embedded: OrderedDict[str, np.ndarray[Any, Any]] = OrderedDict()

    # -- the Answerer protocol ------------------------------------------------------------

    def decide(self, body: dict[str, Any]) -> Decision:
        """Answer locally, audit, or forward (with the reason)."""
        table = self.table()
        messages = body.get("messages")
        if not table.tasks or not isinstance(messages, list):
            return Decision(reason="no task")
        shape = prompt_shape([m for m in messages if isinstance(m, dict)])
        entry = self.match(table, shape) if shape is not None else None
        if entry is None or shape is None:
            return Decision(reason="no task")
        why = forward_reason(body, entry)
        if why is None and table.paused:
            why = "paused"
        if why is None and entry.task.state in ("paused", "declined"):
            why = entry.task.state
        if why is None and entry.active is None:
            why = "shadow" if entry.shadow is not None else "no version"
        if why is not None:
            decision = Decision(task=entry.name, reason=why)
            if why == "shadow":
                self._remember(decision, _Pending(entry, shape.input, None, "shadow"))
            return decision
        return self._ask(entry, shape)

    def settle(self, decision: Decision, upstream_text: str | None, latency_ms: float) -> None:
        """Record the student's answer beside the provider's (the truth) for audits, unsure
        answers and shadows; pause a task whose audited error breaks its bound."""
        pending = self._take(decision)
        if pending is None or upstream_text is None:
            return
        entry, answer = pending.task, pending.answer
        self._learn(entry, pending, upstream_text)
        truth = self._truth(entry, answer.answer if answer else None, upstream_text)
        if answer is not None and entry.active is not None:
            record(
                self.store,
                entry.active.id,
                pending.mode,
                pending.text,
                answer.answer,
                answer.confidence,
                answer.abstained,
                None,
                truth=truth,
            )
            if pending.mode == "audit" and answer.answer != truth:
                log.info("%s: audit: it said %r, the model %r", entry.name, answer.answer, truth)
                self.check(entry)
        if entry.shadow is not None:
            self._shadow(entry, entry.shadow, pending.text, upstream_text)

    def _learn(self, entry: PromptTask, pending: _Pending, upstream_text: str) -> None:
        """The provider's answer is one more example of the task: real input, so it may
        calibrate, unless the call was forwarded because the student abstained (those calls
        are harder than the task's traffic: they train only). A task still waiting for its
        bound earns it this way, and one that answers keeps learning."""
        output = label_key(upstream_text) if entry.task.kind == "classify" else upstream_text
        if not output.strip():
            return
        try:
            task = self.registry.task(entry.name)
            added = self.registry.add_examples(
                task, [(pending.text, output, "teacher", None)], train_only=not pending.uniform
            )
            if added and task.state == "needs-data" and self.registry.has_enough(task):
                self.registry.update_task(task, state="queued")  # its bound may hold now
        except TaskError as exc:
            log.warning("%s: cannot keep the call as an example: %s", entry.name, exc)

    def _truth(self, entry: PromptTask, answer: str | None, upstream_text: str) -> str:
        """The provider's answer as the student's is compared with it: a label key for a
        classifier; for generated text the student's own answer when the task's judge says
        the two agree (the provider's text itself stays in its llm.call event)."""
        kind = entry.task.kind
        if kind == "classify":
            return label_key(upstream_text)
        if answer is None:
            return upstream_text
        thresholds = Thresholds.of(entry.task.spec)
        try:
            verdict = judge(
                kind, [answer], [upstream_text], lambda t: self._embed(list(t)), thresholds
            )
        except ModelError as exc:
            log.warning("%s: cannot judge an answer: %s", entry.name, exc)
            return upstream_text
        return answer if verdict.correct[0] else upstream_text

    # -- matching -------------------------------------------------------------------------

    def table(self) -> TaskTable:
        """The prompt tasks that can match, re-read every few seconds."""
        with self._lock:
            table = self._table
            if table is None or time.monotonic() - table.at > REFRESH_SECONDS:
                table = self._table = self._load()
            return table

    def refresh(self) -> None:
        """Forget the task table now (a task was accepted, paused or retrained)."""
        with self._lock:
            self._table = None

    def _load(self) -> TaskTable:
        tasks = []
        for task in self.registry.tasks():
            templates = task.spec.get("templates")
            if task.input_kind != "text" or not isinstance(templates, dict) or not templates:
                continue
            versions = self.registry.versions(task)
            active = next((v for v in versions if v.status == "active"), None)
            shadow = next((v for v in versions if v.status == "shadow"), None)
            if active is None and shadow is None:
                continue
            tasks.append(
                PromptTask(
                    task,
                    active,
                    shadow,
                    {str(k): str(v) for k, v in templates.items()},
                    frozenset(str(m) for m in task.spec.get("models", [])),
                    {str(k): str(v) for k, v in (task.spec.get("labels") or {}).items()},
                    bool(task.spec.get("history", False)),
                )
            )
        by_hash = {h: t for t in tasks for h in t.templates}
        return TaskTable(tasks, by_hash, self.store.paused, time.monotonic())

    def match(self, table: TaskTable, shape: PromptShape) -> PromptTask | None:
        """The task whose template the call has, else the one whose template is closest in
        embedding (at least MATCH_COSINE); only calls with a variable input qualify."""
        found = table.by_hash.get(shape.template_hash)
        if found is not None or INPUT not in shape.template:
            return found
        owners = [(t, template) for t in table.tasks for template in t.templates.values()]
        try:
            vectors = self._embed([shape.template, *(template for _, template in owners)])
        except ModelError as exc:
            log.warning("cannot embed a call's template: %s", exc)
            return None
        similarity = vectors[1:] @ vectors[0]
        best = int(similarity.argmax())
        return owners[best][0] if similarity[best] >= MATCH_COSINE else None

    def _embed(self, texts: list[str]) -> np.ndarray[Any, Any]:
        """Unit vectors of the texts, the ones seen before from memory."""
        with self._lock:
            todo = [t for t in dict.fromkeys(texts) if t not in self._embedded]
        fresh = self.students.embed(todo) if todo else []
        with self._lock:
            for text, vector in zip(todo, fresh, strict=True):
                self._embedded[text] = np.asarray(vector, dtype=np.float32)
            found = {t: self._embedded[t] for t in texts if t in self._embedded}
            for text in found:
                self._embedded.move_to_end(text)
            while len(self._embedded) > MAX_EMBEDDED:
                self._embedded.popitem(last=False)
        return np.stack([found[t] for t in texts])

    # -- answering ------------------------------------------------------------------------

    def _ask(self, entry: PromptTask, shape: PromptShape) -> Decision:
        """The active version's answer: confident -> reply (or audit), else forward."""
        assert entry.active is not None
        version = entry.active
        # The coin is flipped before the student speaks, so the audited calls are a uniform
        # sample of the task's traffic, sure or not: only those may calibrate a retrain.
        audit = self.rng.random() < self.config.gateway.audit_share
        try:
            (answer,) = self.students.predict(version.id, [shape.input])
        except ModelError as exc:
            log.warning("%s: %s", entry.name, exc)
            return Decision(task=entry.name, reason="student failed")
        if answer.abstained or answer.answer is None:
            why = "audit" if audit else abstain_reason(answer)
            decision = Decision(task=entry.name, reason=why, abstained=not audit)
            self._remember(decision, _Pending(entry, shape.input, answer, "active", audit))
            return decision
        reply = LocalReply(
            entry.name, version.version, entry.render(answer.answer), answer.confidence
        )
        if audit:
            decision = Decision(audit=reply, task=entry.name, reason="audit")
            self._remember(decision, _Pending(entry, shape.input, answer, "audit"))
            return decision
        record(
            self.store,
            version.id,
            "active",
            shape.input,
            answer.answer,
            answer.confidence,
            False,
            None,
        )
        return Decision(reply=reply, task=entry.name, reason="confident")

    def _shadow(self, entry: PromptTask, version: ModelVersion, text: str, upstream: str) -> None:
        try:
            (answer,) = self.students.predict(version.id, [text])
        except ModelError as exc:
            log.warning("%s (shadow): %s", entry.name, exc)
            return
        truth = self._truth(entry, answer.answer, upstream)
        record(
            self.store,
            version.id,
            "shadow",
            text,
            answer.answer,
            answer.confidence,
            answer.abstained,
            None,
            truth=truth,
        )

    def check(self, entry: PromptTask) -> bool:
        """Pause the task when its audited error breaks the version's bound; True if it did."""
        version = entry.active
        try:
            task = self.registry.task(entry.name)
        except TaskError:
            return False
        if version is None or task.state == "paused":
            return False
        stats = live_stats(self.store, version.id, "audit")
        bound = float(version.guarantee.get("bound", 1.0))
        if not breaks_bound(stats.errors, stats.judged, bound):
            return False
        self.registry.update_task(task, state="paused")
        self.refresh()
        text = (
            f"{stats.errors} of its last {stats.judged} audited answers disagreed with the"
            f" model, more than its bound of {bound:.1%} allows; it stopped answering and"
            f" forwards every call (`stillroom tasks resume {task.name}` turns it back on)"
        )
        log.warning("%s paused: %s", task.name, text)
        if self.on_pause is not None:
            self.on_pause(task.name, text)
        return True

    # -- decisions waiting for their settle -----------------------------------------------

    def _remember(self, decision: Decision, pending: _Pending) -> None:
        with self._lock:
            self._pending[id(decision)] = (decision, pending)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)

    def _take(self, decision: Decision) -> _Pending | None:
        with self._lock:
            found = self._pending.pop(id(decision), None)
        # An id is reused once its object is gone: only the very decision settles.
        return found[1] if found is not None and found[0] is decision else None


def forward_reason(body: dict[str, Any], task: PromptTask) -> str | None:
    """Why a call that matches a task must still go to the provider, or None."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    if any(body.get(key) for key in TOOLS) or any(_uses_tools(m) for m in messages):
        return "tools"
    if any(_non_text(m.get("content")) for m in messages):
        return "non-text content"
    if body.get("n") not in (None, 1):
        return "n > 1"
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else fmt
    if kind not in (None, "text"):
        return f"response_format {kind}"  # a plain label is no JSON object
    if body.get("logprobs") or body.get("top_logprobs"):
        return "logprobs"
    if any(m != "text" for m in body.get("modalities") or []):
        return "non-text output"
    model = body.get("model")
    if task.models and model not in task.models:
        return f"model {model} not learned"
    if not task.history and any(m.get("role") == "assistant" for m in messages):
        return "conversation"
    return None


def abstain_reason(answer: Answer) -> str:
    """The student's abstention in a word or two: out of scope, unsure, or no guarantee."""
    why = answer.reason or ""
    if why.startswith("unlike"):
        return "out of scope"
    if why.startswith("unsure"):
        return "unsure"
    return "no guarantee yet" if why.startswith("no guarantee") else why or "unsure"


def _uses_tools(message: dict[str, Any]) -> bool:
    return message.get("role") in ("tool", "function") or bool(
        message.get("tool_calls") or message.get("function_call")
    )


def _non_text(content: Any) -> bool:
    """Images, audio, files: any content part that is not text."""
    if content is None or isinstance(content, str):
        return False
    if not isinstance(content, list):
        return True
    return any(not isinstance(p, dict) or p.get("type", "text") != "text" for p in content)
