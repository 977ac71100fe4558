"""A task's evaluation card: what it learned, how sure it must be, how it did on held-out data."""

from __future__ import annotations

from typing import Any

from stillroom.registry import TEST_FIX, ModelVersion, Task, why_test_failed


def card(task: Task, examples: int, version: ModelVersion | None, all_: list[Any]) -> str:
    lines = [f"task {task.name} ({task.kind}, made by {task.origin}, {task.state})"]
    if task.instruction:
        lines.append(f"instruction: {task.instruction}")
    lines.append(f"examples: {examples}; target: error <= {task.target:.0%} at 95% confidence")
    spend = task.spec.get("teacher_spend")
    if spend:
        cost = spend.get("cost_usd")
        lines.append(
            f"teacher: {spend.get('model')} labelled {spend.get('labelled')} and synthesized"
            f" {spend.get('synthesized')} in {spend.get('calls')} calls,"
            + (" cost unknown" if cost is None else f" ${cost:.4f}")
        )
    if version is None:
        lines.append("not trained yet: `stillroom distill " + task.name + " --now`")
        return "\n".join(lines)
    m, g = version.metrics, version.guarantee
    split = m.get("split", {})
    lines += [
        f"version v{version.version} ({version.student}, {version.status}),"
        f" trained on {split.get('train')} / calibrated on {split.get('calibration')}"
        f" / tested on {split.get('test')}",
        f"accuracy when forced to answer: {pct(m.get('accuracy_test'))} on test,"
        f" {pct(m.get('accuracy_calibration'))} on calibration",
    ]
    failure = why_test_failed(g)
    if failure is not None and version.status != "active":
        lines.append(f"not active: {failure}; {TEST_FIX}")
    if g.get("threshold") is None:
        more = f" about {g['needed']} more real examples" if g.get("needed") else " better data"
        lines.append(f"guarantee: none holds yet; it always abstains. It needs{more}.")
        watching = ": it watches matching calls and learns from them"
        lines.append(
            "only real inputs (your calls, imports, your own actions) calibrate; made-up"
            " (synthetic) examples and corrections only train"
            + (watching if version.status == "shadow" else "")
        )
    else:
        lines.append(
            f"guarantee: answers when confidence >= {g['threshold']:.3f} and in scope;"
            f" error among answered <= {pct(g['bound'])}"
            f" ({1 - float(g.get('delta', 0.05)):.1%} Clopper-Pearson bound, this version's"
            " share of the task's 95%,"
            f" {g['errors']} errors in {g['answered']}); coverage {pct(g['coverage'])}"
        )
        test = g.get("test") or {}
        if test:
            holds = "holds" if test.get("holds") else "DOES NOT hold"
            lines.append(
                f"on test: coverage {pct(test.get('coverage'))}, error among answered"
                f" {pct(test.get('error_rate'))} ({test.get('errors')} in"
                f" {test.get('answered')}): the bound {holds}"
            )
    scores = (m.get("scores") or {}).get("test") or {}
    if "exact" in scores:
        lines.append(
            f"on test when forced: exact match {pct(scores['exact'])},"
            f" field F1 {pct(scores.get('field_f1'))}"
        )
    elif "rouge_l" in scores:
        t = m.get("thresholds") or {}
        lines.append(
            f"on test when forced: ROUGE-L {scores['rouge_l']:.3f}, similarity"
            f" {scores.get('similarity', 0):.3f}; an answer counts as right when its"
            f" similarity >= {t.get('similarity')} and ROUGE-L >= {t.get('rouge_l')}"
        )
    labels = m.get("labels", {})
    if labels:
        lines.append("labels: " + ", ".join(f"{k} ({v})" for k, v in labels.items()))
    unlearned = m.get("unlearned_labels")
    if unlearned:
        lines.append(
            "not yet learnable (no training example, so never predicted): " + ", ".join(unlearned)
        )
    if task.spec.get("refused_targets"):
        lines.append(f"refused targets: {task.spec['refused_targets']}")
    lines.append("versions: " + ", ".join(f"v{v.version} {v.status}" for v in all_))
    return "\n".join(lines)


def pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1%}"
