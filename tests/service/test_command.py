"""command: an argument list (never a shell), the event on stdin, failures and timeouts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from factories import action, file_event

from stillroom.config import Config
from stillroom.errors import ActionError, ConfigError, UndoError
from stillroom.service.hooks.executor import Executor

Snapshot = Callable[..., dict[str, bytes]]


RECORDER = (
    "import json, sys; "
    "open(sys.argv[-1], 'w').write(json.dumps({'argv': sys.argv[1:-1], 'stdin': sys.stdin.read()}))"
)


def test_command_gets_argv_without_a_shell_and_the_event_on_stdin(
    tmp_path: Path, tree: Path, executor: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a shell would have run `touch pwned`
    name = "a b; touch pwned $(touch pwned2) `touch pwned3`.txt"
    src = tree / "inbox" / name
    src.write_text("x")
    out = tmp_path / "seen.json"
    config = action(kind="command", argv=[sys.executable, "-c", RECORDER, "{path}", str(out)])
    event = file_event(src)
    record = executor.run(executor.plan(config, src, event), event_id=7)
    assert record.state == "done", record.error
    seen = json.loads(out.read_text())
    assert seen["argv"] == [str(src)]
    assert json.loads(seen["stdin"])["payload"]["path"] == str(src)
    assert not list(tmp_path.glob("pwned*"))
    assert record.plan["returncode"] == 0

    executor.run(executor.plan(config, src))  # no event: stdin is {"path": ...}
    assert json.loads(json.loads(out.read_text())["stdin"]) == {"path": str(src)}


def test_command_failure_and_timeout_are_failed_states(tree: Path, executor: Executor) -> None:
    src = tree / "inbox" / "notes.txt"
    failing = action(
        kind="command",
        argv=[sys.executable, "-c", "import sys; sys.stderr.write('boom at the end'); sys.exit(3)"],
    )
    record = executor.run(executor.plan(failing, src))
    assert record.state == "failed"
    assert record.error == "exit status 3: boom at the end"
    slow = action(
        kind="command", argv=[sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5
    )
    started = time.monotonic()
    record = executor.run(executor.plan(slow, src))
    assert record.state == "failed" and "timed out after 0.5 s" in (record.error or "")
    assert time.monotonic() - started < 10


def test_command_not_found_and_not_undoable(tree: Path, executor: Executor) -> None:
    src = tree / "inbox" / "notes.txt"
    with pytest.raises(ActionError, match="command not found"):
        executor.plan(action(kind="command", argv=["no-such-program-xyz", "{path}"]), src)
    record = executor.run(executor.plan(action(kind="command", argv=["true"]), src))
    assert record.state == "done"
    with pytest.raises(UndoError, match="a command's effects are your own; stillroom cannot"):
        executor.undo(record.id)
    with pytest.raises(UndoError, match="no action to undo"):
        executor.undo()  # the only done action is a command


DUMP_ENV = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"


def test_command_gets_a_minimal_environment_never_stillrooms_keys(
    tree: Path, tmp_path: Path, executor: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STILLROOM_UPSTREAM_API_KEY", "sk-live-not-for-children")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-not-either")
    monkeypatch.setenv("LANG", "C.UTF-8")
    src = tree / "inbox" / "notes.txt"
    out = tmp_path / "env.json"
    config = action(
        kind="command",
        argv=[sys.executable, "-c", DUMP_ENV, str(out), "{path}"],
        env={"SORTER_MODE": "strict"},
    )
    record = executor.run(executor.plan(config, src))
    assert record.state == "done", record.error
    seen = json.loads(out.read_text())
    assert "STILLROOM_UPSTREAM_API_KEY" not in seen and "ANTHROPIC_API_KEY" not in seen
    assert not any("sk-" in value for value in seen.values())
    assert seen["SORTER_MODE"] == "strict" and seen["LANG"] == "C.UTF-8"
    assert seen["PATH"] and seen["HOME"]
    assert set(seen) <= {"PATH", "HOME", "LANG", "SORTER_MODE", "LC_CTYPE"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sh", "-c", "{path}"], "argv[2]: {path} is the code that -c of sh runs"),
        (["/bin/bash", "-lc", "{path}"], "argv[2]: {path} is the code that -lc of bash runs"),
        (["env", "python3", "-c", "{path}"], "argv[3]: {path} is the code that -c of python"),
        (["sh", "-c", "unzip {path}"], "argv[2]: {path} must be a whole argument of its own"),
        (["pwsh", "-Command", "Expand-Archive", "{path}"], "every argument is run as code"),
        (["{path}", "--help"], "argv[0]: {path} may not be"),
        (["osascript", "-e", "{path}"], "argv[2]: {path} is the code that -e of osascript"),
    ],
)
def test_path_as_code_is_a_config_error_naming_the_automation(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    config = tmp_path / "c.yaml"
    automation = {"name": "unpack-zips", "action": {"kind": "command", "argv": argv}}
    config.write_text(
        json.dumps(
            {"automations": [{"name": "ok", "action": {"kind": "copy", "to": "/x"}}, automation]}
        )
    )
    with pytest.raises(ConfigError) as caught:
        Config.from_path(config)
    text = str(caught.value)
    assert text.startswith(f"{config}: automations[1].action: automation 'unpack-zips'")
    assert message in text


def test_path_after_the_code_is_fine() -> None:
    config = Config.from_data(
        {
            "automations": [
                {
                    "name": "unpack",
                    "action": {
                        "kind": "command",
                        "argv": ["sh", "-c", 'unzip "$1"', "sh", "{path}"],
                    },
                }
            ]
        }
    )
    assert config.automations[0].action.argv[-1] == "{path}"  # type: ignore[union-attr]
