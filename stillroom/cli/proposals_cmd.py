"""`stillroom proposals`: what stillroom offers to take over, and your answers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Annotated

import typer
from rich.table import Table

from stillroom.cli.options import console, open_store
from stillroom.paths import Paths

app = typer.Typer(
    help="Offers to automate a task, with their evidence.", invoke_without_command=True
)


@app.callback()
def proposals(ctx: typer.Context) -> None:
    """List open proposals."""
    if ctx.invoked_subcommand is not None:
        return
    from stillroom.daemon.proposals import listing

    with open_store() as store:
        found = listing(store)
    if not found:
        console.print("no open proposals")
        return
    table = Table("id", "task", "when", "state", "evidence")
    for p in found:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.at))
        table.add_row(str(p.id), p.task, when, p.state, p.text)
    console.print(table)
    console.print("answer with: stillroom proposals accept|later|never ID")


def _answer(proposal_id: int, reply: str) -> None:
    from stillroom.daemon.proposals import answer

    with open_store() as store:
        done = answer(store, proposal_id, reply)
    wake_daemon()
    said = {
        "accept": "accepted: it acts from now on",
        "later": "will ask again in a few days",
        "never": "declined: it will not ask again",
    }[reply]
    console.print(f"#{done.id} {done.task}: {said}")


@app.command()
def accept(proposal_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Let the task act from now on."""
    _answer(proposal_id, "accept")


@app.command()
def later(proposal_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Ask again in a few days."""
    _answer(proposal_id, "later")


@app.command()
def never(proposal_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Decline: the task never acts and is not proposed again."""
    _answer(proposal_id, "never")


def wake_daemon() -> None:
    """Tell a running daemon (SIGUSR1) to pick up task changes now, not in a minute."""
    from stillroom.daemon.lock import running_pid

    pid = running_pid(Paths.resolve().lock_file)
    if pid and pid > 0:
        with contextlib.suppress(ProcessLookupError):  # it stopped meanwhile: nothing to wake
            os.kill(pid, signal.SIGUSR1)
