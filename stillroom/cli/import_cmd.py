"""`stillroom import-llm-logs`: bring the calls the `llm` CLI logged in as llm.call events."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stillroom.cli.options import ConfigOption, console, get_config, open_store

PathArgument = Annotated[
    Path | None,
    typer.Argument(
        help="llm's logs.db (default: `llm logs path`, honouring LLM_USER_PATH).",
        show_default=False,
    ),
]


def import_llm_logs(path: PathArgument = None, config: ConfigOption = None) -> None:
    """Import the prompts and answers the `llm` CLI logged, so `stillroom detect` can learn
    from them. Secrets are redacted; running it again imports only what is new."""
    from stillroom.llm_logs import default_path, import_logs

    cfg, _ = get_config(config)
    source = (path or default_path()).expanduser()
    with open_store() as store:
        report = import_logs(source, store, cfg)
    console.print(f"imported {report.imported} calls from {source}", markup=False)
    console.print(
        f"skipped {report.already} already imported, {report.too_old} older than the"
        f" {cfg.retention.days}-day retention, {report.empty} without a prompt or an answer"
    )
    if report.imported:
        console.print("next: `stillroom detect` finds the tasks you repeat", markup=False)
