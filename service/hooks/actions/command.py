"""Run the user's command on a file: an argument list, never a shell. Not undoable."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from stillroom.config import ActionConfig, CommandAction
from stillroom.errors import ActionError
from stillroom.events import Event
from stillroom.service.hooks.actions.base import Action, Journal, Outcome, Plan, short
from stillroom.service.hooks.actions.files import regular_file

TAIL = 2000
NOT_UNDOABLE = "a command's effects are your own; stillroom cannot undo them"
INTERRUPTED = "interrupted while the command ran; it may have finished, and is not run again"


def _tail(data: bytes) -> str:
    return data[-TAIL:].decode("utf-8", "replace").strip()


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
        argv = [arg.replace("{path}", str(src)) for arg in config.argv]
        _program(argv[0])
        stdin = event.model_dump_json() if event is not None else json.dumps({"path": str(src)})
        params = {"path": str(src), "argv": argv, "timeout": config.timeout, "stdin": stdin}
        return Plan(self.kind, params)

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        return f"run {shlex.join(params['argv'])} on {short(params['path'])}"

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        regular_file(params["path"])  # still there
        return dict(params)

    def execute(self, journal: Journal) -> None:
        plan = journal.plan
        argv, timeout = plan["argv"], float(plan["timeout"])
        proc = subprocess.Popen(
            [_program(argv[0]), *argv[1:]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            shell=False,
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
