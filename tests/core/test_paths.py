"""Where files live: STILLROOM_HOME overrides every platform folder; folders are private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stillroom.paths import Paths


def test_home_overrides_everything(stillroom_home: Path) -> None:
    paths = Paths.resolve()
    for folder in (
        paths.config_dir,
        paths.data_dir,
        paths.models_dir,
        paths.logs_dir,
        paths.run_dir,
    ):
        assert stillroom_home in folder.parents
    assert paths.database == stillroom_home / "data" / "stillroom.db"


def test_platform_folders_without_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STILLROOM_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    paths = Paths.resolve()
    assert paths.config_file == tmp_path / "xdg-config" / "stillroom" / "config.yaml"
    assert paths.database == tmp_path / "xdg-data" / "stillroom" / "stillroom.db"


def test_ensure_makes_private_folders(stillroom_home: Path) -> None:
    paths = Paths.resolve().ensure()
    for folder in (paths.config_dir, paths.data_dir, paths.models_dir, paths.logs_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
