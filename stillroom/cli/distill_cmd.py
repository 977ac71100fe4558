"""`stillroom distill`: train queued tasks now, or queue them for the nightly run.

The nightly scheduler runs `distill --now` as a child and may stop it with SIGTERM when the
user returns; the task in training then stays queued and leaves no version behind.
"""

from __future__ import annotations

from typing import Annotated

import typer

from stillroom.cli.options import console, get_config, open_store
from stillroom.cli.task_card import card
from stillroom.errors import StillroomError
from stillroom.paths import Paths
from stillroom.registry import Registry, Task


def distill(
    name: Annotated[str | None, typer.Argument(help="Task (default: every queued one).")] = None,
    now: Annotated[bool, typer.Option("--now", help="Train now instead of tonight.")] = False,
) -> None:
    """Train a task's student (or queue it for the nightly run)."""
    with open_store() as store:
        registry = Registry(store)
        chosen = (
            [registry.task(name)] if name else [t for t in registry.tasks() if t.state == "queued"]
        )
        if not now:
            for task in chosen:
                registry.update_task(task, state="queued")
            console.print(
                f"queued {len(chosen)} task(s) for tonight" if chosen else "nothing queued"
            )
            return
        if not chosen:
            console.print("nothing queued")
            return
        from stillroom.cli.proposals_cmd import wake_daemon
        from stillroom.trainers.distill import STOPPED_EXIT, Stopped, stop_on_sigterm, task_done

        # SIGTERM (the nightly scheduler making room for the returning user) stops at once but
        # cleanly: the task in training keeps its state and leaves no version behind; the
        # tasks finished before keep theirs.
        done: list[str] = []
        current: Task | None = None
        with stop_on_sigterm():
            try:
                from stillroom.service.encoder import Encoder
                from stillroom.trainers.distill import distill_classifier
                from stillroom.trainers.generative import GENERATIVE_KINDS, distill_generative

                runtime = get_config(None)[0].runtime
                encoder = Encoder(store=store)
                for task in chosen:
                    current = task
                    console.print(f"distilling {task.name}")
                    with console.status(f"distilling {task.name}") as status:

                        def progress(text: str, name: str = task.name) -> None:
                            status.update(f"{name}: {text}")
                            if not console.is_terminal:  # a log file (the nightly child's)
                                console.print(f"{name}: {text}", markup=False)

                        try:
                            if task.kind in GENERATIVE_KINDS:
                                result = distill_generative(
                                    registry, task, Paths.resolve(), runtime, progress
                                )
                            else:
                                result = distill_classifier(
                                    registry, task, encoder, Paths.resolve(), progress, runtime
                                )
                        except StillroomError as exc:
                            if name is not None:
                                raise
                            # The queue goes on: one untrainable task must not hold back
                            # the others every night.
                            registry.update_task(task, state="needs-data")
                            console.print(f"skipped {task.name}: {exc}", markup=False)
                            continue
                    done.append(task.name)
                    fresh = registry.task(task.name)
                    console.print(
                        card(
                            fresh,
                            registry.count_examples(fresh),
                            result.version,
                            registry.versions(fresh),
                        )
                    )
                    task_done()  # a SIGTERM that waited for this task's commit stops us here
            except Stopped:
                cut = current.name if current is not None and current.name not in done else None
                console.print(_stopped(registry, cut))
                if done:
                    wake_daemon()
                raise typer.Exit(STOPPED_EXIT) from None
        wake_daemon()  # a new shadow or active version starts listening now


def _stopped(registry: Registry, cut: str | None) -> str:
    """What a SIGTERM-stopped distillation says last (the nightly child's log keeps it)."""
    queued = [t.name for t in registry.tasks() if t.state == "queued"]
    if cut is not None and cut not in queued:  # trained by name, never queued
        return f"stopped: {cut} was not trained (`stillroom distill {cut} --now` starts it again)"
    again = f"{cut} stays queued and is trained again from the start; " if cut else ""
    return f"stopped: will resume at the next run ({again}{len(queued)} task(s) queued)"
