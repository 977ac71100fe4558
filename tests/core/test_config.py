"""The config: YAML -> typed models, one ConfigError naming file, key path and value."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from stillroom.config import Config, ConvertImageAction, MoveAction
from stillroom.config_files import config_path, default_config_text
from stillroom.errors import ConfigError
from stillroom.paths import Paths


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_default_config_is_valid_and_opts_in_downloads() -> None:
    config = Config.from_data(yaml.safe_load(default_config_text()))
    assert config.version == 1
    assert [f.path for f in config.folders] == [Path.home() / "Downloads"]
    assert Path.home() / "Documents" in config.destinations
    assert config.automations == []
    assert config.server.host == "127.0.0.1"


def test_full_config_round_trip(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
version: 1
folders:
  - {path: ~/Downloads, recursive: true, ignore: ["*.iso"]}
destinations: [Documents, /srv/archive]
automations:
  - name: pdfs
    match: {extensions: [.PDF, txt], min_size: 1KB, mime: application/*}
    action: {kind: move, to: ~/Documents/Papers}
  - name: heic
    enabled: false
    action: {kind: convert_image, format: jpeg, quality: 80}
retention: {days: 30, max_mb: 100}
""",
    )
    config = Config.from_path(path)
    assert config.folders[0].recursive and config.folders[0].ignore == ["*.iso"]
    assert config.destinations == [Path.home() / "Documents", Path("/srv/archive")]
    first, second = config.automations
    assert first.match.extensions == ["pdf", "txt"]
    assert first.match.mime == ["application/*"]
    assert first.match.min_size == 1000
    assert first.action == MoveAction(kind="move", to=Path.home() / "Documents/Papers")
    assert isinstance(second.action, ConvertImageAction) and second.action.quality == 80
    assert not second.enabled
    assert config.retention.days == 30


def test_os_integration_defaults_are_private_and_cautious() -> None:
    config = Config()
    assert not config.monitors.input.enabled  # opt-in
    assert not config.monitors.system.foreground_app  # opt-in
    assert config.schedule.minutes() == (60, 360)
    assert Config.from_data({"schedule": {"window": "22:30 - 06:00"}}).schedule.minutes() == (
        22 * 60 + 30,
        360,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "automations:\n  - name: a\n    action: {kind: teleport}\n",
            "automations[0].action.kind: 'teleport' is not one of move, rename, copy, "
            "convert_image, command",
        ),
        ("folders:\n  - {path: ~/x, recursiv: true}\n", "folders[0].recursiv: unknown key"),
        (
            "server: {port: 99999}\n",
            "server.port: Input should be less than or equal to 65535 (got 99999)",
        ),
        (
            "automations:\n  - name: a\n    action: {kind: move}\n",
            "automations[0].action.to: missing",
        ),
        (
            "automations:\n  - name: a\n    action: {kind: command, argv: []}\n",
            "automations[0].action.argv: List should have at least 1 item after validation, "
            "not 0 (got [])",
        ),
        ("version: 7\n", "version: 7 is newer than this stillroom reads (1); upgrade"),
        ("- just\n- a list\n", "the file must be a mapping of keys, got ['just', 'a list']"),
        ("folders: [\n", "line 2, column 1: not valid YAML"),
        (
            "schedule: {window: '25:00-06:00'}\n",
            "schedule.window: '25:00' is not a time of day (got '25:00-06:00')",
        ),
        (
            "schedule: {window: '01:00'}\n",
            "schedule.window: '01:00' is not a window like 01:00-06:00 (got '01:00')",
        ),
        (
            "schedule: {window: '02:00-02:00'}\n",
            "schedule.window: '02:00-02:00' is an empty window (got '02:00-02:00')",
        ),
        (
            "monitors: {input: {idle_source: xinput}}\n",
            "monitors.input.idle_source: Input should be 'auto', 'pynput' or 'logind'",
        ),
    ],
)
def test_bad_config_names_file_key_and_value(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Config.from_path(path)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_error_message_word_for_word(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "retention: {days: 0}\nautomations:\n  - {name: x, match: {min_size: lots},"
        " action: {kind: copy, to: /tmp}}\n",
    )
    with pytest.raises(ConfigError) as caught:
        Config.from_path(path)
    assert str(caught.value) == (
        f"{path}: automations[0].match.min_size: could not parse value and unit from byte "
        "string (got 'lots'); retention.days: Input should be greater than or equal to 1 (got 0)"
    )


def test_duplicate_automation_names_rejected(tmp_path: Path) -> None:
    action = "{kind: copy, to: /tmp}"
    path = write(
        tmp_path,
        f"automations:\n  - {{name: a, action: {action}}}\n  - {{name: a, action: {action}}}\n",
    )
    with pytest.raises(ConfigError, match="two automations are named 'a'"):
        Config.from_path(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        Config.from_path(tmp_path / "nope.yaml")


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert Config.from_path(write(tmp_path, "")) == Config()


def test_first_run_copies_the_default_privately(stillroom_home: Path) -> None:
    path = config_path()
    assert path == Paths.resolve().config_file
    assert path.read_text() == default_config_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_environment_and_explicit_paths_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit, env = tmp_path / "a.yaml", tmp_path / "b.yaml"
    monkeypatch.setenv("STILLROOM_CONFIG", str(env))
    assert config_path() == env
    assert config_path(explicit) == explicit
    assert not Paths.resolve().config_file.exists()


def test_schema_lists_every_action_kind() -> None:
    schema = Config.schema_dict()
    text = str(schema)
    for kind in ("move", "rename", "copy", "convert_image", "command"):
        assert f"'const': '{kind}'" in text
    assert schema["additionalProperties"] is False


def test_home_paths_expand_and_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVE", "/srv/a")
    config = Config.from_data({"destinations": ["$ARCHIVE/x", "~/y"]})
    assert config.destinations == [Path("/srv/a/x"), Path(os.path.expanduser("~/y"))]
