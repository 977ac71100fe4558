"""File actions from the command line: apply rules now, list, undo, pause and resume."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stillroom.cli.options import ConfigOption, DryRunOption, console, get_config, open_store
from stillroom.config import Config
from stillroom.errors import ActionError
from stillroom.events import Event, FilePayload
from stillroom.service.hooks.deciders import decide, deciders_from_config
from stillroom.service.hooks.executor import Executor


def apply(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files or folders (default: the opt-in folders).", show_default=False),
    ] = None,
    dry_run: DryRunOption = False,
    config: ConfigOption = None,
) -> None:
    """Run the automations over files that are already there.

    A file the daemon (or another apply) is acting on at the same moment is skipped: every
    action claims its file first, so two processes never act on one file."""
    from stillroom.monitors.features import file_features

    cfg, _ = get_config(config)
    deciders = deciders_from_config(cfg)
    with open_store() as store:
        if store.paused and not dry_run:
            console.print("automations are paused (`stillroom resume` restarts them)")
            raise typer.Exit(1)
        executor = Executor(store)
        acted = 0
        for file, root in _files(cfg, paths):
            features = file_features(file, cfg.filesystem.snippet_chars)
            if features is None:
                continue
            event = Event(
                source="filesystem",
                kind="file.created",
                payload=FilePayload(path=str(file), root=str(root), features=features),
            )
            decision = decide(deciders, event)
            if decision is None:
                continue
            try:
                plan = executor.plan(decision.action, file, event)
            except ActionError as exc:  # gone or changed meanwhile (the daemon moved it?)
                console.print(f"skipped {file}: {exc}  [{decision.decider}]")
                continue
            acted += 1
            if dry_run:
                console.print(f"would {plan.describe()}  [{decision.decider}]")
                continue
            try:
                record = executor.run(plan, automation=decision.decider, confidence=1.0)
            except ActionError as exc:  # claimed by another process: it is acting on it
                console.print(f"skipped {file}: {exc}  [{decision.decider}]")
                continue
            state = "done" if record.state == "done" else f"{record.state}: {record.error}"
            console.print(f"#{record.id} {plan.describe()}  [{decision.decider}] {state}")
        if not acted:
            console.print("no file matched an automation")


def _files(cfg: Config, paths: list[Path] | None) -> Iterator[tuple[Path, Path]]:
    roots = (
        [(p.expanduser().resolve(), True) for p in paths]
        if paths
        else [(f.path, f.recursive) for f in cfg.folders if f.path.is_dir()]
    )
    for root, recursive in roots:
        if root.is_file():
            yield root, root.parent
            continue
        found = root.rglob("*") if recursive else root.iterdir()
        for file in sorted(found):
            if file.is_file() and not file.name.startswith((".stillroom-", ".")):
                yield file, root


def log(
    limit: Annotated[int, typer.Option("--limit", "-l", help="How many, newest first.")] = 20,
) -> None:
    """List the journal of file actions."""
    with open_store() as store:
        records = store.actions(limit=limit)
    if not records:
        console.print("no actions yet")
        return
    table = Table("id", "when", "automation", "action", "state")
    for record in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.at))
        detail = record.plan.get("summary") or record.kind
        state = record.state + (f" ({record.error})" if record.error else "")
        table.add_row(str(record.id), when, record.automation or "-", str(detail), state)
    console.print(table)


def undo(
    action_id: Annotated[
        int | None, typer.Argument(help="Action id (default: the last one).", show_default=False)
    ] = None,
    dry_run: DryRunOption = False,
) -> None:
    """Put back what an action did (the last one, or by id)."""
    with open_store() as store:
        executor = Executor(store)
        if dry_run:
            console.print(f"would {executor.plan_undo(action_id)}")
            return
        record = executor.undo(action_id)
        console.print(f"undid #{record.id}: {record.plan.get('undo_summary') or record.kind}")


def pause() -> None:
    """Stop every automation at once (events are still recorded)."""
    with open_store() as store:
        store.paused = True
    console.print("automations paused")


def resume() -> None:
    """Restart the automations."""
    with open_store() as store:
        store.paused = False
    console.print("automations resumed")
