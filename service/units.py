"""The OS service that runs `stillroom daemon`: a systemd user unit or a launchd agent.

Install and uninstall are plans first (what file, which commands); only `install()` and
`uninstall()` write files and talk to the service manager. A file is replaced or removed
only when it carries stillroom's marker: a unit the user wrote by hand is never touched.
"""

from __future__ import annotations

import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stillroom.errors import ServiceError
from stillroom.paths import Paths, private_dir

Manager = Literal["systemd", "launchd"]
Ownership = Literal["missing", "ours", "foreign"]

UNIT_NAME = "stillroom.service"
LABEL = "dev.stillroom.daemon"
MARKER = "Written by `stillroom service install`"
MARKER_LINE = f"{MARKER}: it replaces or removes this file only while this line is here."
ENV_VARS = ("STILLROOM_HOME", "STILLROOM_CONFIG")
UNIT_MODE = 0o644
COMMAND_TIMEOUT = 30.0

# Words systemd reads as they are; anything else is double-quoted with C escapes.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


@dataclass(frozen=True)
class Step:
    """One service-manager command; a failed `check` step stops the ones after it."""

    argv: tuple[str, ...]
    check: bool = True

    @property
    def text(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class StepResult:
    step: Step
    ok: bool
    detail: str


@dataclass
class Outcome:
    """What the service manager said: steps run, and checked steps left undone."""

    results: list[StepResult] = field(default_factory=list)
    pending: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.pending and all(r.ok for r in self.results if r.step.check)

    def failures(self) -> list[StepResult]:
        return [r for r in self.results if not r.ok]


@dataclass(frozen=True)
class Plan:
    """Steps to run `before` and `after` the file at `path` is written (text) or removed."""

    manager: Manager
    path: Path
    was: Ownership
    before: tuple[Step, ...] = ()
    after: tuple[Step, ...] = ()
    text: str = ""
    unchanged: bool = False


@dataclass(frozen=True)
class ServiceStatus:
    path: Path
    was: Ownership
    current: bool
    states: dict[str, str]


def manager_for(platform: str | None = None) -> Manager:
    """The service manager of a platform (default: this one's sys.platform)."""
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux"):
        return "systemd"
    if platform == "darwin":
        return "launchd"
    raise ServiceError(f"no user service support on {platform}: run `stillroom daemon` yourself")


def daemon_command() -> list[str]:
    """The argument list that runs the daemon with this installation's Python."""
    python = os.path.abspath(sys.executable)  # not resolved: a venv's python is a link
    script = Path(python).parent / "stillroom"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), "daemon"]
    return [python, "-m", "stillroom", "daemon"]


def service_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """STILLROOM_HOME and STILLROOM_CONFIG as absolute paths, where they are set."""
    environ = os.environ if environ is None else environ
    return {k: str(Path(environ[k]).expanduser().resolve()) for k in ENV_VARS if environ.get(k)}


def unit_path(manager: Manager) -> Path:
    """Where the user's own units (systemd) or agents (launchd) live."""
    if manager == "launchd":
        return Path.home() / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"
    return base / "systemd" / "user" / UNIT_NAME


def render(
    manager: Manager,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    logs_dir: Path | None = None,
) -> str:
    """The service file's text; defaults come from this process and its environment."""
    command = daemon_command() if command is None else list(command)
    env = service_environment() if env is None else env
    if manager == "systemd":
        return render_unit(command, env)
    return render_plist(command, env, Paths.resolve().logs_dir if logs_dir is None else logs_dir)


def render_unit(command: Sequence[str], env: Mapping[str, str]) -> str:
    """A systemd user unit that runs `command`."""
    lines = [
        f"# {MARKER_LINE}",
        "[Unit]",
        "Description=stillroom daemon: learns the tasks you repeat and does them for you",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={_exec_line(command)}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        *(f"Environment={_systemd_word(f'{k}={v}', exec_arg=False)}" for k, v in env.items()),
        "Restart=on-failure",
        "RestartSec=10",
        "# 2: the config is invalid; 3: another daemon runs. Restarting fixes neither.",
        "RestartPreventExitStatus=2 3",
        "# SIGTERM to the daemon alone: it stops its training children (SIGKILL after 10 s).",
        "KillMode=mixed",
        "TimeoutStopSec=30",
        "StandardOutput=journal",
        "StandardError=journal",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def render_plist(command: Sequence[str], env: Mapping[str, str], logs_dir: Path) -> str:
    """A launchd agent that runs `command` at login and again if it fails."""
    log = str(logs_dir / "launchd.log")
    agent: dict[str, object] = {
        "Label": LABEL,
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        # Like Restart=on-failure: a crash restarts it, a clean stop (SIGTERM) does not.
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "ExitTimeOut": 30,
        # Not Background: that throttles CPU and I/O, and the gateway answers the user live.
        "ProcessType": "Standard",
        "StandardOutPath": log,
        "StandardErrorPath": log,
    }
    if env:
        agent["EnvironmentVariables"] = dict(env)
    text = plistlib.dumps(agent, fmt=plistlib.FMT_XML, sort_keys=False).decode()
    return text.replace("<plist ", f"<!-- {MARKER_LINE} -->\n<plist ", 1)


def ownership(path: Path) -> Ownership:
    """Whether a service file is absent, written by stillroom, or someone else's."""
    if not os.path.lexists(path):
        return "missing"
    if path.is_symlink() or not path.is_file():
        return "foreign"
    try:
        return "ours" if MARKER in path.read_text(errors="replace") else "foreign"
    except OSError:
        return "foreign"


def plan_install(manager: Manager | None = None) -> Plan:
    """What install would write and run; refuses when a file not ours is in the way."""
    manager = manager_for() if manager is None else manager
    path = unit_path(manager)
    was = _not_foreign(path, "replace")
    text = render(manager)
    unchanged = was == "ours" and path.read_text(errors="replace") == text
    if manager == "systemd":
        steps = [Step(("systemctl", "--user", "daemon-reload"))]
        if was == "ours" and not unchanged:
            # A running daemon keeps the old definition until restarted; a stopped one stays so.
            steps.append(Step(("systemctl", "--user", "try-restart", UNIT_NAME)))
        steps.append(Step(("systemctl", "--user", "enable", "--now", UNIT_NAME)))
        return Plan(manager, path, was, (), tuple(steps), text, unchanged)
    domain = f"gui/{os.getuid()}"
    before = (Step(("launchctl", "bootout", f"{domain}/{LABEL}"), check=False),)
    after = (
        Step(("launchctl", "enable", f"{domain}/{LABEL}")),
        Step(("launchctl", "bootstrap", domain, str(path))),
    )
    return Plan(manager, path, was, before, after, text, unchanged)


def install(plan: Plan) -> Outcome:
    """Write the service file (0644), then ask the service manager to enable and start it."""
    if ownership(plan.path) != plan.was:
        raise ServiceError(f"{plan.path} changed while installing; run the command again")
    outcome = Outcome()
    if plan.manager == "launchd":
        private_dir(Paths.resolve().logs_dir)  # launchd opens its log but creates no folders
    _run(plan.before, outcome)
    if not plan.unchanged:
        _write(plan.path, plan.text)
    _run(plan.after, outcome)
    return outcome


def plan_uninstall(manager: Manager | None = None) -> Plan:
    """What uninstall would stop and remove; refuses when the file is not stillroom's."""
    manager = manager_for() if manager is None else manager
    path = unit_path(manager)
    was = _not_foreign(path, "remove")
    if was == "missing":
        return Plan(manager, path, was)
    if manager == "systemd":
        stop = Step(("systemctl", "--user", "disable", "--now", UNIT_NAME), check=False)
        reload = Step(("systemctl", "--user", "daemon-reload"), check=False)
        return Plan(manager, path, was, (stop,), (reload,))
    stop = Step(("launchctl", "bootout", f"gui/{os.getuid()}/{LABEL}"), check=False)
    return Plan(manager, path, was, (stop,))


def uninstall(plan: Plan) -> Outcome:
    """Stop and disable the service (best effort), then remove stillroom's file."""
    outcome = Outcome()
    if plan.was == "missing":
        return outcome
    if ownership(plan.path) != "ours":
        raise ServiceError(f"{plan.path} changed while uninstalling; run the command again")
    _run(plan.before, outcome)
    try:
        plan.path.unlink()
    except FileNotFoundError:
        pass  # removed meanwhile: the goal is reached
    except OSError as exc:
        raise ServiceError(f"cannot remove {plan.path}: {exc.strerror}") from None
    _run(plan.after, outcome)
    return outcome


def status(manager: Manager | None = None) -> ServiceStatus:
    """The service file (where, whose, up to date) and the service manager's view of it."""
    manager = manager_for() if manager is None else manager
    path = unit_path(manager)
    was = ownership(path)
    current = was == "ours" and path.read_text(errors="replace") == render(manager)
    if manager == "systemd":
        states = {
            "enabled": _systemctl_state("is-enabled"),
            "active": _systemctl_state("is-active"),
        }
    else:
        states = {"launchd": _launchd_state()}
    return ServiceStatus(path, was, current, states)


def _not_foreign(path: Path, verb: str) -> Ownership:
    was = ownership(path)
    if was == "foreign":
        raise ServiceError(
            f"{path} exists and was not written by stillroom; will not {verb} it "
            "(move it away, or remove it yourself)"
        )
    return was


def _write(path: Path, text: str) -> None:
    """Replace the file atomically, so the manager never reads half of it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            os.fchmod(out.fileno(), UNIT_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise ServiceError(f"cannot write {path}: {exc.strerror}") from None


def _run(steps: Sequence[Step], outcome: Outcome) -> None:
    """Run steps in order; after a failed checked step, the rest are left pending."""
    for i, step in enumerate(steps):
        if outcome.pending:
            outcome.pending.extend(steps[i:])
            return
        code, _, why = _call(step.argv)
        outcome.results.append(StepResult(step, code == 0, why))
        if code != 0 and step.check:
            outcome.pending.append(step)


def _call(argv: Sequence[str]) -> tuple[int | None, str, str]:
    """(exit status, None if it could not run; stdout; the last line of why it failed)."""
    if shutil.which(argv[0]) is None:
        return None, "", f"{argv[0]} not found"
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "", f"no answer within {COMMAND_TIMEOUT:.0f} s"
    except OSError as exc:
        return None, "", exc.strerror or str(exc)
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()
    why = said[-1] if said and done.returncode else f"exit status {done.returncode}"
    return done.returncode, done.stdout.strip(), why


def _systemctl_state(verb: str) -> str:
    """`systemctl --user VERB` prints the state on stdout even when it exits non-zero."""
    _, out, why = _call(("systemctl", "--user", verb, UNIT_NAME))
    return out.splitlines()[0] if out else f"unknown ({why})"


def _launchd_state() -> str:
    code, out, why = _call(("launchctl", "print", f"gui/{os.getuid()}/{LABEL}"))
    if code == 0:
        found = re.search(r"^\s*state = (.+)$", out, re.MULTILINE)
        return f"loaded ({found.group(1)})" if found else "loaded"
    return "not loaded" if "could not find service" in why.lower() else f"unknown ({why})"


def _systemd_word(word: str, *, exec_arg: bool) -> str:
    """One word of a unit file: `%` is a specifier everywhere, `$` expands in Exec arguments."""
    if any(c in word for c in "\n\r\0"):
        raise ServiceError(f"cannot put a line break in a systemd unit: {word!r}")
    escaped = word.replace("%", "%%")
    if exec_arg:
        escaped = escaped.replace("$", "$$")
    if _PLAIN_WORD.fullmatch(word):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec_line(command: Sequence[str]) -> str:
    """ExecStart's value; systemd takes the program path literally but refuses some of it."""
    program, *args = command
    if any(c in program for c in "\"'\\\x7f") or any(ord(c) < 32 for c in program):
        raise ServiceError(
            f"systemd refuses to run a program whose path has quotes, backslashes or control "
            f"characters: {program!r}; install stillroom in a plainer folder"
        )
    words = [_systemd_word(program, exec_arg=False)]
    return " ".join([*words, *(_systemd_word(a, exec_arg=True) for a in args)])
