"""Run the user's command on a file: an argument list, never a shell. Not undoable.

The file's path is one whole argument (never the program, never code: see
stillroom.command_argv), and the command gets a minimal environment (PATH, HOME, LANG and
the automation's own `env`), never stillroom's (its API keys, its token).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from stillroom.command_argv import PLACEHOLDER
from stillroom.command_argv import problem as argv_problem
from stillroom.config import ActionConfig, CommandAction
from stillroom.errors import ActionError
from stillroom.events import Event
from stillroom.service.hooks.actions.base import Action, Journal, Outcome, Plan, short
from stillroom.service.hooks.actions.files import (
    identity,
    open_regular,
    regular_file,
    source_facts,
)

TAIL = 2000
NOT_UNDOABLE = "a command's effects are your own; stillroom cannot undo them"
INTERRUPTED = "interrupted while the command ran; it may have finished, and is not run again"


def _tail(data: bytes) -> str:
    return data[-TAIL:].decode("utf-8", "replace").strip()


def child_env(own: dict[str, str]) -> dict[str, str]:
    """PATH, HOME and LANG of this process (or plain defaults), then the automation's own."""
    env = {
        "PATH": os.environ.get("PATH") or os.defpath,
        "HOME": os.environ.get("HOME") or os.path.expanduser("~"),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }
    return {**env, **own}


def _program(name: str) -> str:
    found = shutil.which(name) if os.sep not in name else name
    if found is None or not os.access(found, os.X_OK) or os.path.isdir(found):
        raise ActionError(f"command not found: {name}")
    return found


class Command(Action):
    """`command`: argv with {path} expanded; stdin is the event as JSON."""

    kind: ClassVar[str] = "command"
    undoable = False
    checkpoints = ("journaled", "exited")

    def plan(self, config: ActionConfig, path: Path, event: Event | None) -> Plan:
        if not isinstance(config, CommandAction):
            raise ActionError(f"{self.kind} got a {config.kind} config")
        src = regular_file(path)
        found = argv_problem(config.argv)
        if found is not None:
            raise ActionError(found)
        argv = [str(src) if arg == PLACEHOLDER else arg for arg in config.argv]
        _program(argv[0])
        stdin = event.model_dump_json() if event is not None else json.dumps({"path": str(src)})
        params = {
            "path": str(src),
            "argv": argv,
            "timeout": config.timeout,
            "stdin": stdin,
            "env": dict(config.env),
            "src_id": identity(src),
        }
        return Plan(self.kind, params)

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        return f"run {shlex.join(params['argv'])} on {short(params['path'])}"

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        # Still there, and still the file the plan was made for.
        facts = source_facts(Path(params["path"]), digest=False, expect=params.get("src_id"))
        return {**params, "src_id": facts["src_id"]}

    def claimed(self, plan: dict[str, Any]) -> tuple[str, list[int]] | None:
        return plan["path"], plan["src_id"]

    def execute(self, journal: Journal) -> None:
        plan = journal.plan
        argv, timeout = plan["argv"], float(plan["timeout"])
        # The last check before the command opens the file by its name: a regular file, not
        # a link, and the inode claimed for this action.
        os.close(open_regular(plan["path"], expect=plan["src_id"]))
        proc = subprocess.Popen(
            [_program(argv[0]), *argv[1:]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            shell=False,
            env=child_env(plan.get("env") or {}),
            start_new_session=True,  # its own process group, so a timeout kills its children
        )
        try:
            out, err = proc.communicate(plan["stdin"].encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()  # a grandchild that left the group still holds the pipes
            proc.wait()
            raise ActionError(f"timed out after {timeout:g} s and was killed") from None
        self.step("exited")
        journal.plan.update(returncode=proc.returncode, stdout_tail=_tail(out))
        if proc.returncode != 0:
            detail = _tail(err)[-500:] or "no output on stderr"
            raise ActionError(f"exit status {proc.returncode}: {detail}")

    def settle(self, journal: Journal, *, forward: bool) -> Outcome:
        if not forward:
            return Outcome("failed")
        return Outcome("failed", INTERRUPTED)
