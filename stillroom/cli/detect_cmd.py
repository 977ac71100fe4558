"""`stillroom detect`: find repeated tasks now and queue them for distillation."""

from __future__ import annotations

from rich.table import Table

from stillroom.cli.options import ConfigOption, console, get_config, open_store


def detect(config: ConfigOption = None) -> None:
    """Find the tasks you repeat; each becomes a task queued for tonight's distillation."""
    from stillroom.daemon.candidates import promote_candidates
    from stillroom.daemon.detector import run_detection

    cfg, _ = get_config(config)
    with open_store() as store:
        found = run_detection(store, cfg)
        tasks = {t.instruction: t for t in promote_candidates(store, cfg)}
    if not found:
        console.print("no repeated tasks yet")
        return
    table = Table("kind", "score", "events", "days", "task", "what repeats")
    for cand in found:
        task = tasks.get(cand.signature)
        table.add_row(
            cand.kind,
            f"{cand.score:.2f}",
            str(cand.support),
            str(cand.days),
            f"{task.name} ({task.state})" if task else "-",
            cand.signature,
        )
    console.print(table)
