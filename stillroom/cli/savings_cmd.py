"""`stillroom savings`: what answering calls locally saved, per learned prompt task."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from stillroom.cli.options import ConfigOption, console, get_config, open_store


def savings(
    days: Annotated[
        float | None, typer.Option(min=0, help="Only the last N days (default: all recorded).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Per task: calls answered locally, forwarded (audits included), audited, audits that
    disagreed, median latency of each path, and the estimated cost saved."""
    from stillroom.savings import ledger, since_days

    cfg, _ = get_config(config)
    with open_store() as store:
        rows = ledger(store, cfg.gateway.prices, since_days(days))
    if not rows:
        console.print("no calls matched a learned task yet")
        return
    table = Table(
        "task",
        "local",
        "forwarded",
        "audited",
        "disagreements",
        "local p50 ms",
        "forwarded p50 ms",
        "saved $",
    )
    for row in rows:
        table.add_row(
            row.task,
            str(row.local),
            str(row.forwarded),
            str(row.audited),
            str(row.disagreements),
            _ms(row.local_p50_ms),
            _ms(row.forwarded_p50_ms),
            "-" if row.saved_usd is None else f"{row.saved_usd:.4f}",
        )
    console.print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
