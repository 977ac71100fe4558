"""`stillroom demo`: watch stillroom learn to sort downloads, in a throwaway home folder."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def demo(
    seed: Annotated[int, typer.Option(help="Seed of the generated downloads.")] = 7,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary home and print where it is.")
    ] = False,
    fast: Annotated[bool, typer.Option("--fast", help="Fewer files (for tests).")] = False,
) -> None:
    """Show the whole loop on generated downloads: detect, distill, shadow, propose, sort,
    leave the unsure alone, a correction and an undo (a few minutes; nothing of yours is
    touched)."""
    from stillroom.demo.narrator import FAST, Demo, Sizes
    from stillroom.demo.stage import Stage

    # Narration wraps at the terminal's width; piped, at a readable one.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 100)
    root = Path(tempfile.mkdtemp(prefix="stillroom-demo-")).resolve()
    stage = Stage(root)
    try:
        Demo(console, stage, seed, FAST if fast else Sizes()).run()
    finally:
        stage.stop()
        if keep:
            console.print(f"kept the demo's home folder: {root}", soft_wrap=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
