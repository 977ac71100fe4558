"""Where the config file is: --config, STILLROOM_CONFIG, or the user's own copy of the
packaged default (made on first run, private)."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from stillroom.config import Config
from stillroom.paths import PRIVATE_FILE, Paths, private_dir

ENV_CONFIG = "STILLROOM_CONFIG"


def default_config_text() -> str:
    return resources.files("stillroom.configs").joinpath("default.yaml").read_text("utf-8")


def config_path(explicit: Path | None = None, paths: Paths | None = None) -> Path:
    """--config, then STILLROOM_CONFIG, then the user's config (copied from the default)."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    paths = paths or Paths.resolve()
    target = paths.config_file
    if not target.exists():
        private_dir(target.parent)
        with resources.as_file(resources.files("stillroom.configs") / "default.yaml") as src:
            shutil.copyfile(src, target)
        os.chmod(target, PRIVATE_FILE)
    return target


def load_config(explicit: Path | None = None) -> tuple[Config, Path]:
    path = config_path(explicit)
    return Config.from_path(path), path
