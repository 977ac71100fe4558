"""The daemon as a user runs it: a subprocess, real files, real SQLite, real signals."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from daemon_harness import DaemonHarness


def test_records_events_status_and_stops_on_sigterm(daemon: DaemonHarness) -> None:
    proc = daemon.start()
    (daemon.downloads / "report.txt").write_text("quarterly numbers\n")
    created = daemon.wait(lambda: daemon.events("file.created"), what="file.created")
    assert created[0]["path"] == str(daemon.downloads / "report.txt")
    assert created[0]["features"]["snippet"].startswith("quarterly numbers")

    status = daemon.cli("status")
    assert status.returncode == 0
    assert status.stdout.splitlines()[0] == f"running (pid {proc.pid})"
    assert "file.created" in status.stdout

    assert daemon.stop(proc) == 0
    assert "stopped" in daemon.log()
    assert daemon.cli("status").stdout.splitlines()[0] == "not running"


def test_second_instance_refuses(daemon: DaemonHarness) -> None:
    proc = daemon.start()
    second = daemon.cli("daemon", "--config", str(daemon.config))
    assert second.returncode == 3
    assert (
        second.stderr.strip()
        == f"error: stillroom is already running (pid {proc.pid}); stop it first"
    )
    assert proc.poll() is None
    assert daemon.stop(proc) == 0


def test_daemon_never_imports_torch(daemon: DaemonHarness) -> None:
    proc = daemon.start()
    (daemon.downloads / "a.txt").write_text("hello")
    daemon.wait(lambda: daemon.events("file.created"), what="event")
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "libtorch" not in maps and "/torch/" not in maps
    daemon.stop(proc)


def test_user_move_to_destination_is_one_moved_event(daemon: DaemonHarness) -> None:
    proc = daemon.start()
    src = daemon.downloads / "invoice.pdf"
    src.write_bytes(b"%PDF-1.4 not really")
    daemon.wait(lambda: daemon.events("file.created"), what="created")
    (daemon.documents / "Taxes").mkdir()
    os.rename(src, daemon.documents / "Taxes" / "invoice.pdf")
    moved = daemon.wait(lambda: daemon.events("file.moved"), what="moved")
    assert moved[0]["src_path"] == str(src)
    assert moved[0]["path"] == str(daemon.documents / "Taxes" / "invoice.pdf")
    time.sleep(1.0)
    assert daemon.events("file.deleted") == []
    daemon.stop(proc)


def test_rule_moves_new_file_and_undo_puts_it_back(daemon: DaemonHarness) -> None:
    daemon.write_config(
        automations=[
            {
                "name": "pdfs",
                "match": {"extensions": ["pdf"]},
                "action": {"kind": "move", "to": str(daemon.documents / "PDF")},
            }
        ]
    )
    proc = daemon.start()
    (daemon.documents / "PDF").mkdir()
    (daemon.documents / "PDF" / "paper.pdf").write_bytes(b"already here")
    (daemon.downloads / "paper.pdf").write_bytes(b"new paper")
    target = daemon.documents / "PDF" / "paper (1).pdf"
    daemon.wait(target.exists, what="automated move")
    assert target.read_bytes() == b"new paper"
    assert (daemon.documents / "PDF" / "paper.pdf").read_bytes() == b"already here"
    daemon.wait(lambda: daemon.query("SELECT state FROM actions") == [("done",)], what="journal")
    time.sleep(1.0)
    # Stillroom's own move is recorded as its own and sets off no further rule.
    moved = daemon.events("file.moved")
    assert all(m["by_stillroom"] for m in moved)
    assert len(daemon.query("SELECT id FROM actions")) == 1

    undo = daemon.cli("undo")
    assert undo.returncode == 0, undo.stderr
    assert (daemon.downloads / "paper.pdf").read_bytes() == b"new paper"
    assert not target.exists()
    # The daemon sees the file come back as stillroom's own doing and leaves it alone.
    back = str(daemon.downloads / "paper.pdf")
    returned = daemon.wait(
        lambda: [
            e
            for e in daemon.events("file.moved") + daemon.events("file.created")
            if e["path"] == back and e.get("src_path") != back and e["by_stillroom"]
        ],
        what="the undone file seen back",
    )
    assert returned
    time.sleep(1.5)
    assert (daemon.downloads / "paper.pdf").exists() and not target.exists()
    assert len(daemon.query("SELECT id FROM actions")) == 1
    log = daemon.cli("log")
    assert "pdfs" in log.stdout and "undone" in log.stdout
    daemon.stop(proc)


def test_pause_and_resume(daemon: DaemonHarness) -> None:
    daemon.write_config(
        automations=[
            {
                "name": "txt",
                "match": {"extensions": ["txt"]},
                "action": {"kind": "move", "to": str(daemon.documents)},
            }
        ]
    )
    proc = daemon.start()
    assert daemon.cli("pause").stdout.strip() == "automations paused"
    (daemon.downloads / "one.txt").write_text("1")
    daemon.wait(lambda: daemon.events("file.created"), what="created while paused")
    time.sleep(0.5)
    assert (daemon.downloads / "one.txt").exists()
    assert "paused" in daemon.cli("status").stdout
    daemon.cli("resume")
    (daemon.downloads / "two.txt").write_text("2")
    daemon.wait((daemon.documents / "two.txt").exists, what="move after resume")
    assert (daemon.downloads / "one.txt").exists()
    daemon.stop(proc)


def test_sighup_reloads_and_a_bad_config_keeps_the_old(daemon: DaemonHarness) -> None:
    proc = daemon.start()
    daemon.write_config(
        automations=[
            {
                "name": "late",
                "match": {"extensions": ["md"]},
                "action": {"kind": "copy", "to": str(daemon.documents)},
            }
        ]
    )
    proc.send_signal(signal.SIGHUP)
    daemon.wait(lambda: "config reloaded" in daemon.log(), what="reload")
    (daemon.downloads / "notes.md").write_text("# notes")
    daemon.wait((daemon.documents / "notes.md").exists, what="copy by reloaded rule")
    assert (daemon.downloads / "notes.md").exists()

    daemon.config.write_text("server: {port: nope}\n")
    proc.send_signal(signal.SIGHUP)
    daemon.wait(lambda: "config not reloaded" in daemon.log(), what="rejected reload")
    assert "server.port" in daemon.log()
    (daemon.downloads / "more.md").write_text("# more")
    daemon.wait((daemon.documents / "more.md").exists, what="old rule still active")
    assert daemon.stop(proc) == 0


def test_missing_opt_in_folder_is_one_warning(daemon: DaemonHarness, tmp_path: Path) -> None:
    gone = tmp_path / "NoSuchFolder"
    daemon.write_config(folders=[{"path": str(gone)}, {"path": str(daemon.downloads)}])
    proc = daemon.start()
    (daemon.downloads / "x.txt").write_text("x")
    daemon.wait(lambda: daemon.events("file.created"), what="event from the folder that exists")
    assert daemon.log().count(str(gone)) == 1
    assert daemon.stop(proc) == 0


def test_sigkill_mid_action_is_reconciled_on_restart(daemon: DaemonHarness) -> None:
    daemon.write_config(
        automations=[
            {
                "name": "bins",
                "match": {"extensions": ["bin"]},
                "action": {"kind": "move", "to": str(daemon.documents)},
            }
        ]
    )
    proc = daemon.start(STILLROOM_CRASH_AT="move.linked")
    (daemon.downloads / "data.bin").write_bytes(b"\x00payload")
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert daemon.query("SELECT state FROM actions") == [("planned",)]

    proc = daemon.start()
    assert "was interrupted" in daemon.log()
    states = daemon.query("SELECT state FROM actions")
    assert states in ([("done",)], [("failed",)])
    places = [
        p for p in (daemon.downloads / "data.bin", daemon.documents / "data.bin") if p.exists()
    ]
    assert len(places) == 1 and places[0].read_bytes() == b"\x00payload"
    assert not [p for p in daemon.documents.iterdir() if p.name.startswith(".stillroom-")]
    daemon.stop(proc)
