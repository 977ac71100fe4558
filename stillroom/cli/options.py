"""Options every command shares, and how a command gets its config and store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from stillroom.config import Config
from stillroom.config_files import ENV_CONFIG, load_config
from stillroom.paths import Paths
from stillroom.store import Store

# Piped output is read by scripts and tests: do not squeeze tables into 80 columns.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar=ENV_CONFIG,
        help="Config file (default: the one in your stillroom config folder).",
        show_default=False,
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", "-n", help="Show the plan; change nothing.")
]


def get_config(path: Path | None) -> tuple[Config, Path]:
    return load_config(path)


def open_store() -> Store:
    return Store(Paths.resolve().ensure().database)
