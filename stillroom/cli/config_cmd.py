"""`stillroom config check | schema | path | show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stillroom.cli.options import ConfigOption, console, get_config
from stillroom.config import Config
from stillroom.config_checks import public
from stillroom.config_files import config_path

app = typer.Typer(help="Check, show and explain the config file.", no_args_is_help=True)


@app.command()
def check(
    file: Annotated[Path | None, typer.Argument(help="File to check.", show_default=False)] = None,
    config: ConfigOption = None,
) -> None:
    """Validate a config file; print its problems and exit 2 when it is bad."""
    cfg, path = get_config(file or config)
    missing = [f.path for f in cfg.folders if not f.path.is_dir()]
    console.print(
        f"{path}: ok ({len(cfg.folders)} folders, {len(cfg.destinations)} destinations, "
        f"{len(cfg.automations)} automations)"
    )
    for folder in missing:
        console.print(f"warning: opt-in folder {folder} does not exist; it will be skipped")


@app.command()
def schema() -> None:
    """Print the JSON schema of the config file."""
    console.print_json(json.dumps(Config.schema_dict()))


@app.command()
def path(config: ConfigOption = None) -> None:
    """Print which config file is used (without checking it)."""
    console.print(str(config_path(config)))


@app.command()
def show(config: ConfigOption = None) -> None:
    """Print the config as stillroom reads it, defaults filled in; keys masked, URLs without
    their userinfo and query."""
    cfg, _ = get_config(config)
    console.print_json(json.dumps(public(cfg.model_dump(mode="json")), ensure_ascii=False))
