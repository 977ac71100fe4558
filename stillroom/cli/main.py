"""The `stillroom` command: every subcommand, and errors turned into one line + exit code."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.table import Table

from stillroom import __version__
from stillroom.cli import (
    actions_cmd,
    config_cmd,
    demo_cmd,
    detect_cmd,
    distill_cmd,
    events_cmd,
    export_cmd,
    import_cmd,
    proposals_cmd,
    savings_cmd,
    serve_cmd,
    service_cmd,
    tasks_cmd,
    token_cmd,
)
from stillroom.cli.options import ConfigOption, DryRunOption, console, err_console, get_config
from stillroom.config_files import ENV_CONFIG
from stillroom.errors import StillroomError
from stillroom.paths import Paths

STATUS_BUSY_SECONDS = 2.0

app = typer.Typer(
    help="stillroom: learns the tasks you repeat and does them for you, only where it is sure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")
app.command()(actions_cmd.apply)
app.command()(actions_cmd.log)
app.command()(actions_cmd.undo)
app.command()(actions_cmd.pause)
app.command()(actions_cmd.resume)
app.command()(events_cmd.events)
app.command()(events_cmd.forget)
app.add_typer(tasks_cmd.app, name="tasks")
app.command()(distill_cmd.distill)
app.command()(tasks_cmd.run)
app.command()(detect_cmd.detect)
app.command()(import_cmd.import_llm_logs)
app.add_typer(proposals_cmd.app, name="proposals")
app.command()(savings_cmd.savings)
app.command()(demo_cmd.demo)
app.command()(serve_cmd.serve)
app.command()(token_cmd.token)
app.command()(export_cmd.export)
app.add_typer(service_cmd.app, name="service")


@app.callback()
def _root(
    config: ConfigOption = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    # `stillroom --config F CMD` reaches every subcommand through the same variable.
    if config is not None:
        os.environ[ENV_CONFIG] = str(config)
    if version:
        console.print(__version__)
        raise typer.Exit()


@app.command()
def daemon(config: ConfigOption = None, dry_run: DryRunOption = False) -> None:
    """Run the daemon in the foreground (SIGTERM or Ctrl-C stops it, SIGHUP reloads)."""
    from stillroom.daemon.process import Daemon

    cfg, path = get_config(config)
    Daemon(cfg, path, dry_run=dry_run).run()


@app.command()
def status(config: ConfigOption = None) -> None:
    """Say whether the daemon runs, with counts of events and actions."""
    import sqlite3

    from stillroom.daemon.health import StoreHealth
    from stillroom.daemon.lock import running_pid
    from stillroom.store import Store

    paths = Paths.resolve()
    pid = running_pid(paths.lock_file)
    console.print(f"running (pid {pid})" if pid else "not running")
    health = StoreHealth.read(paths.bus_state, pid) if pid else None
    if health is not None:
        console.print(health.describe())
    try:
        # A short wait: a database another process holds locked must not hang `status`.
        with Store(paths.ensure().database, busy_timeout=STATUS_BUSY_SECONDS) as store:
            events, actions, paused = store.count_events(), store.count_actions(), store.paused
    except (sqlite3.OperationalError, StillroomError) as exc:
        console.print(f"counts unavailable: the database is busy ({exc})")
        return
    table = Table("what", "count")
    table.add_row("events", str(sum(events.values())))
    for kind, count in events.items():
        table.add_row(f"  {kind}", str(count))
    table.add_row("actions", str(sum(actions.values())))
    for state, count in actions.items():
        table.add_row(f"  {state}", str(count))
    console.print(table)
    if paused:
        console.print("automations are paused (`stillroom resume` restarts them)")


def main() -> None:
    try:
        app()
    except StillroomError as exc:
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
