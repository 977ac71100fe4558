"""Child processes: niced, logged, stopped cleanly; one per job name."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psutil

from stillroom.daemon.children import NICE, Children


def test_child_runs_niced_logs_and_stops(tmp_path: Path, stillroom_home: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"folders": []}))
    logs = tmp_path / "logs"
    logs.mkdir()
    children = Children(logs, config)
    codes: list[int | None] = []
    worker = threading.Thread(target=lambda: codes.append(children.run("long", "daemon")))
    worker.start()
    deadline = time.monotonic() + 30
    while (
        "daemon ready" not in (stillroom_home / "logs" / "daemon.log").read_text(errors="replace")
        if (stillroom_home / "logs" / "daemon.log").exists()
        else True
    ):
        assert time.monotonic() < deadline, "child never got ready"
        time.sleep(0.1)
    pid = children.running()["long"]
    assert psutil.Process(pid).nice() == NICE
    assert children.run("long", "daemon") is None  # one child per job name
    children.stop()
    worker.join(timeout=30)
    assert codes == [0]
    assert children.running() == {}
    assert "daemon ready" in (logs / "long.log").read_text()
    assert children.run("later", "--version") is None  # closed: no new children
