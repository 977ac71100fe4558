"""The config: YAML -> typed models, one ConfigError naming file, key path and value."""

from __future__ import annotations

import copy
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rich.pretty import pretty_repr

from stillroom.config import Config, ConvertImageAction, GatewayConfig, MoveAction, UpstreamConfig
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


def test_roots_that_are_links_resolve_once_when_the_config_loads(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in ("Downloads", "Documents", "Elsewhere"):
        (data / name).mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / "Downloads").symlink_to(data / "Downloads")  # common: ~/Downloads -> /data/...
    (home / "Documents").symlink_to(data / "Documents")
    path = write(
        tmp_path,
        f"""
folders:
  - {{path: {home}/Downloads}}
  - {{path: {home}/Downloads/later}}
destinations: [{home}/Documents, {home}/Archive]
""",
    )
    config = Config.from_path(path)
    assert [f.path for f in config.folders] == [
        data / "Downloads",
        data / "Downloads" / "later",  # not there yet: what exists on its way is resolved
    ]
    assert config.destinations == [data / "Documents", home / "Archive"]
    # Once: pointing the link elsewhere afterwards does not move a loaded config's roots.
    (home / "Downloads").unlink()
    (home / "Downloads").symlink_to(data / "Elsewhere")
    assert config.folders[0].path == data / "Downloads"
    assert Config.from_path(path).folders[0].path == data / "Elsewhere"


def test_a_root_in_a_link_loop_is_kept_as_written(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    config = Config.from_data({"folders": [{"path": str(tmp_path / "a")}]})
    assert config.folders[0].path == tmp_path / "a"


# Secrets never shown; no config file, however odd, ends in a traceback.

KEY = "sk-proj-" + "Q7xR2m" * 8


def test_keys_and_url_secrets_stay_out_of_every_repr() -> None:
    upstream = UpstreamConfig(
        base_url="https://bob:hunter2pass@llm.example.com/v1?key=qwerty123#frag", api_key=KEY
    )
    config = Config(gateway=GatewayConfig(openai=upstream))
    for shown in (repr(upstream), str(upstream), repr(config), str(config), pretty_repr(config)):
        for secret in (KEY[3:], "hunter2pass", "bob", "qwerty123", "frag"):
            assert secret not in shown
    assert "api_key='sk-…xR2m'" in repr(upstream)
    assert "base_url='https://****@llm.example.com/v1?****#****'" in repr(upstream)
    assert "api_key='****'" in repr(UpstreamConfig(base_url="http://h", api_key="s3cret"))
    assert upstream.api_key == KEY  # the value itself is intact


@pytest.mark.parametrize(
    "data",
    [
        {"gateway": {"openai": {"base_url": "https://x", "api_key": [KEY]}}},
        {"gateway": {"openai": {"base_url": "https://x", "api_key": 12345678901234}}},
        {"teacher": {"max_retries": KEY}},
        {"gateway": {"openai": {"base_url": ["https://bob:hunter2pass@h/v1"]}}},
        {"gateway": {"openai": {KEY: None}}},
    ],
)
def test_config_errors_do_not_quote_secrets(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_data(data)
    for secret in (KEY[3:], "12345678901234", "hunter2pass"):
        assert secret not in str(caught.value)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["~/x", "$HOME/y", "01:00-06:00", "move", "1KB", "https://u:p@h/v1?k=1"]),
)
KEYS = st.one_of(st.text(max_size=10), st.integers(), st.none(), st.booleans())
DATA = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)


def config_or_config_error(load: Callable[[Any], Config], arg: Any) -> None:
    """Loading gives a Config or one ConfigError; any other exception fails the test."""
    try:
        assert isinstance(load(arg), Config)
    except ConfigError as exc:
        assert str(exc)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for key, value in items:
        yield from _paths(value, (*prefix, key))


@settings(max_examples=150, deadline=None)
@given(DATA)
def test_random_data_gives_a_config_or_a_config_error(data: Any) -> None:
    config_or_config_error(Config.from_data, data)
    config_or_config_error(Config.from_data, {"version": 1, "gateway": data})


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_default_configs_give_a_config_or_a_config_error(draw: st.DataObject) -> None:
    full = Config().model_dump(mode="json")
    data = copy.deepcopy(draw.draw(st.sampled_from([yaml.safe_load(default_config_text()), full])))
    for _ in range(draw.draw(st.integers(1, 3))):
        path = draw.draw(st.sampled_from(list(_paths(data))))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw.draw(st.sampled_from(["set", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw.draw(KEYS)] = draw.draw(DATA)
        else:
            parent[path[-1]] = draw.draw(DATA)
    config_or_config_error(Config.from_data, data)


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        DATA.map(lambda d: yaml.safe_dump(d).encode()),
    )
)
@example(b"\xff\xfe not UTF-8")
@example(b"[" * 3000)  # nested past PyYAML's recursion
@example(b"a: &a [*a]\nversion: *a\n")
def test_random_files_give_a_config_or_a_config_error(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_bytes(raw)
        config_or_config_error(Config.from_path, path)
