"""What was recorded: `stillroom events` and `stillroom forget`."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from stillroom.cli.options import console, open_store
from stillroom.errors import StillroomError


def events(
    kind: Annotated[str | None, typer.Option(help="Only this kind, e.g. file.moved.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-l", help="How many, newest first.")] = 20,
) -> None:
    """List recorded events."""
    with open_store() as store:
        found = store.events(kind=kind, limit=limit)
    if not found:
        console.print("no events recorded")
        return
    table = Table("id", "when", "kind", "path", "from")
    for event in found:
        payload = event.payload
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.at))
        path = str(getattr(payload, "path", "") or "")
        src = str(getattr(payload, "src_path", "") or "")
        table.add_row(str(event.id), when, event.kind, path, src)
    console.print(table)


def forget(
    older_than: Annotated[
        float | None, typer.Option("--older-than", help="Days; delete events older than this.")
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Delete every recorded event.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete recorded events by age, or all of them. The action journal is kept for undo."""
    if (older_than is None) == (not everything):
        raise StillroomError("say --older-than DAYS or --all")
    if everything and not yes and not typer.confirm("Delete every recorded event?"):
        raise typer.Exit(1)
    with open_store() as store:
        deleted = store.forget(older_than_days=older_than)
    console.print(f"deleted {deleted} events")
