"""The daemon as a user service: a unit systemd accepts, a plist launchd reads, and an install
that writes only into the user's unit folder and never over a file the user wrote."""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_harness import run_cli

from stillroom.daemon.lock import InstanceLock
from stillroom.paths import Paths
from stillroom.service import units

HAND_WRITTEN = "[Unit]\nDescription=mine\n\n[Service]\nExecStart=/bin/true\n"


def venv_script() -> Path:
    """The `stillroom` script of the environment running the tests (the service's program)."""
    script = Path(os.path.abspath(sys.executable)).parent / "stillroom"
    assert script.is_file(), f"{script} is missing: install the project (make test does)"
    return script


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A user with a temp HOME, and no reachable user bus: systemctl --user cannot touch a real
    session's manager from a test, whatever machine runs it."""
    home, run = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    run.mkdir(mode=0o700)
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_RUNTIME_DIR": str(run),
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={run}/no-bus",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def unit_file(user: dict[str, str]) -> Path:
    return Path(user["XDG_CONFIG_HOME"]) / "systemd" / "user" / "stillroom.service"


def tree(root: Path) -> set[Path]:
    """Every file, folder and link under root."""
    found: set[Path] = set()
    for folder, dirs, files in os.walk(root):
        found.update(Path(folder, name) for name in [*dirs, *files])
    return found


def verify(unit: Path, runtime: Path) -> tuple[int, list[str]]:
    """`systemd-analyze --user verify`: its exit status and the stderr lines about our unit.

    Lines that do not name the unit (a container without cgroups or a user manager may add
    some) are not about the file under test; they are shown only if the exit status fails.
    """
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    about_unit = [line for line in done.stderr.splitlines() if unit.name in line]
    assert done.returncode == 0 or about_unit, done.stderr
    return done.returncode, about_unit


@pytest.mark.timeout(60)
def test_rendered_unit_passes_systemd_analyze_verify(
    tmp_path: Path, user: dict[str, str], stillroom_home: Path
) -> None:
    text = units.render("systemd")
    assert f"ExecStart={venv_script()} daemon\n" in text
    assert f"Environment=STILLROOM_HOME={stillroom_home}\n" in text
    assert "WantedBy=default.target" in text and "Restart=on-failure" in text
    unit = tmp_path / "stillroom.service"
    unit.write_text(text)
    assert verify(unit, Path(user["XDG_RUNTIME_DIR"])) == (0, [])


@pytest.mark.timeout(60)
def test_verify_catches_a_unit_systemd_cannot_run(tmp_path: Path, user: dict[str, str]) -> None:
    """The check above has teeth: a program that does not exist fails verification."""
    unit = tmp_path / "stillroom.service"
    unit.write_text(units.render_unit([str(tmp_path / "no-such-program"), "daemon"], {}))
    code, about = verify(unit, Path(user["XDG_RUNTIME_DIR"]))
    assert code != 0
    assert any("no-such-program" in line for line in about), about


@pytest.mark.timeout(60)
def test_program_path_with_spaces_dollar_and_percent_is_quoted(
    tmp_path: Path, user: dict[str, str]
) -> None:
    # Unquoted, the space splits the path; an unescaped % is a specifier systemd rejects.
    folder = tmp_path / "my tools $HOME 50%x"
    folder.mkdir()
    (folder / "stillroom").symlink_to(venv_script())
    unit = tmp_path / "stillroom.service"
    env = {"STILLROOM_HOME": str(tmp_path / "home 100%x")}
    unit.write_text(units.render_unit([str(folder / "stillroom"), "daemon"], env))
    assert verify(unit, Path(user["XDG_RUNTIME_DIR"])) == (0, [])
    assert f'ExecStart="{tmp_path}/my tools $HOME 50%%x/stillroom" daemon' in unit.read_text()


def test_program_path_systemd_refuses_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(units.ServiceError, match="quotes, backslashes"):
        units.render_unit([f"{tmp_path}/it's/stillroom", "daemon"], {})


def test_plist_parses_back_with_the_daemon_command(
    tmp_path: Path, stillroom_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "my config.yaml"
    monkeypatch.setenv("STILLROOM_CONFIG", str(config))
    text = units.render(units.manager_for("darwin"))
    agent = plistlib.loads(text.encode())
    assert agent["Label"] == "dev.stillroom.daemon"
    assert agent["ProgramArguments"] == [str(venv_script()), "daemon"]
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["EnvironmentVariables"] == {
        "STILLROOM_HOME": str(stillroom_home),
        "STILLROOM_CONFIG": str(config),
    }
    log = str(Paths.resolve().logs_dir / "launchd.log")
    assert agent["StandardOutPath"] == log and agent["StandardErrorPath"] == log
    plist = tmp_path / "dev.stillroom.daemon.plist"
    plist.write_text(text)
    assert units.ownership(plist) == "ours"


def test_platforms() -> None:
    assert units.manager_for("linux") == "systemd"
    assert units.manager_for("darwin") == "launchd"
    with pytest.raises(units.ServiceError, match="win32"):
        units.manager_for("win32")


def test_environment_is_absolute_and_only_what_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = units.service_environment({"STILLROOM_HOME": "here", "STILLROOM_CONFIG": ""})
    assert env == {"STILLROOM_HOME": str(tmp_path / "here")}


@pytest.mark.timeout(60)
def test_install_dry_run_then_install_writes_only_the_unit(
    tmp_path: Path, user: dict[str, str], unit_file: Path, stillroom_home: Path
) -> None:
    before = tree(tmp_path)
    dry = run_cli("service", "install", "--dry-run", home=stillroom_home, **user)
    assert dry.returncode == 0, dry.stderr
    assert tree(tmp_path) == before
    assert dry.stdout.startswith(f"would write {unit_file} (mode 0644):\n")
    assert "would run: systemctl --user enable --now stillroom.service" in dry.stdout

    done = run_cli("service", "install", home=stillroom_home, **user)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"installed: {unit_file}\n")
    assert unit_file.read_text() in dry.stdout  # the dry run showed exactly this file
    assert stat.S_IMODE(unit_file.stat().st_mode) == 0o644
    user_dir = unit_file.parent
    for path in tree(tmp_path) - before:
        assert path == user_dir or user_dir in path.parents or path in user_dir.parents, path
    # No user bus here: said plainly, with the commands to run later; not a crash.
    assert "`systemctl --user daemon-reload` failed:" in done.stderr
    assert done.stderr.endswith(
        "  systemctl --user daemon-reload\n  systemctl --user enable --now stillroom.service\n"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(60)
def test_without_systemctl_the_unit_is_still_installed(
    tmp_path: Path, user: dict[str, str], unit_file: Path, stillroom_home: Path
) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    done = run_cli("service", "install", home=stillroom_home, PATH=str(empty), **user)
    assert done.returncode == 0, done.stderr
    assert unit_file.is_file()
    assert "failed: systemctl not found" in done.stderr


@pytest.mark.timeout(60)
def test_hand_written_unit_is_never_overwritten_or_removed(
    user: dict[str, str], unit_file: Path, stillroom_home: Path
) -> None:
    unit_file.parent.mkdir(parents=True)
    unit_file.write_text(HAND_WRITTEN)
    for command in (["install"], ["install", "--dry-run"], ["uninstall"]):
        done = run_cli("service", *command, home=stillroom_home, **user)
        assert done.returncode == 1, command
        assert done.stderr.startswith(f"error: {unit_file} exists and was not written by")
        assert unit_file.read_text() == HAND_WRITTEN
    status = run_cli("service", "status", home=stillroom_home, **user)
    assert f"file: {unit_file} (present, not written by stillroom)" in status.stdout


@pytest.mark.timeout(60)
def test_status_uninstall_and_status_again(
    user: dict[str, str], unit_file: Path, stillroom_home: Path
) -> None:
    outcome = units.install(units.plan_install("systemd"))
    assert not outcome.ok and outcome.pending  # no user bus: activation is left to the user
    status = run_cli("service", "status", home=stillroom_home, **user)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == f"file: {unit_file} (installed)"
    assert lines[1].startswith("enabled: ")
    assert lines[2].startswith("active: unknown (")  # the manager is not reachable
    assert lines[3] == "daemon: not running"

    dry = run_cli("service", "uninstall", "--dry-run", home=stillroom_home, **user)
    assert f"would remove {unit_file}" in dry.stdout and unit_file.exists()
    done = run_cli("service", "uninstall", home=stillroom_home, **user)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"removed: {unit_file}\n")
    assert not unit_file.exists()
    again = run_cli("service", "uninstall", home=stillroom_home, **user)
    assert again.stdout == f"not installed: {unit_file}\n"
    status = run_cli("service", "status", home=stillroom_home, **user)
    assert status.stdout.splitlines()[0] == f"file: {unit_file} (not installed)"


@pytest.mark.timeout(60)
def test_reinstall_replaces_ours_and_restarts_only_when_it_changed(
    tmp_path: Path, user: dict[str, str], unit_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    units.install(units.plan_install("systemd"))
    same = units.plan_install("systemd")
    assert same.was == "ours" and same.unchanged
    assert not any("try-restart" in step.argv for step in same.after)

    monkeypatch.setenv("STILLROOM_HOME", str(tmp_path / "elsewhere"))
    assert units.status("systemd").current is False  # the installed file is out of date
    moved = units.plan_install("systemd")
    assert not moved.unchanged
    assert any("try-restart" in step.argv for step in moved.after)
    units.install(moved)
    assert f"Environment=STILLROOM_HOME={tmp_path / 'elsewhere'}\n" in unit_file.read_text()
    assert [p.name for p in unit_file.parent.iterdir() if p.is_file()] == ["stillroom.service"]


@pytest.mark.timeout(60)
def test_a_daemon_already_running_is_named(
    user: dict[str, str], unit_file: Path, stillroom_home: Path
) -> None:
    with InstanceLock(Paths.resolve().lock_file):  # the real lock a running daemon holds
        done = run_cli("service", "install", home=stillroom_home, **user)
        status = run_cli("service", "status", home=stillroom_home, **user)
    assert f"already runs (pid {os.getpid()})" in done.stderr
    assert f"daemon: running (pid {os.getpid()})" in status.stdout


@pytest.mark.timeout(60)
def test_launch_agent_install_and_uninstall_without_launchctl(
    tmp_path: Path, user: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The macOS path on any machine: launchctl is absent here, so only it is left to do."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    plan = units.plan_install("launchd")
    plist = Path(user["HOME"]) / "Library" / "LaunchAgents" / "dev.stillroom.daemon.plist"
    assert plan.path == plist
    outcome = units.install(plan)
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"] == [str(venv_script()), "daemon"]
    assert stat.S_IMODE(plist.stat().st_mode) == 0o644
    assert Paths.resolve().logs_dir.is_dir()  # launchd writes its log there but makes no folder
    uid = os.getuid()
    assert [s.text for s in outcome.pending] == [
        f"launchctl enable gui/{uid}/dev.stillroom.daemon",
        f"launchctl bootstrap gui/{uid} {plist}",
    ]
    assert {r.detail for r in outcome.results} == {"launchctl not found"}
    assert units.status("launchd").states == {"launchd": "unknown (launchctl not found)"}
    units.uninstall(units.plan_uninstall("launchd"))
    assert not plist.exists()
