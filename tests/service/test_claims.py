"""One process at a time acts on a file: journal states change by compare-and-set, and an
action claims its file's (device, inode) before it acts, across processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from daemon_harness import DaemonHarness
from factories import action

from stillroom.errors import ActionError, ConflictError
from stillroom.service.hooks.executor import Executor
from stillroom.store import Store

# Another process that claims a file for an action and holds it until it is killed.
HOLDER = """
import sys, time
from pathlib import Path
from stillroom.store import Store

store = Store(Path(sys.argv[1]))
plan = {"src": sys.argv[2], "dst": sys.argv[3], "want": Path(sys.argv[3]).name}
record = store.journal("move", plan, claim=[int(sys.argv[4]), int(sys.argv[5])])
print(record.id, flush=True)
time.sleep(120)
"""


def file_id(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino]


def test_state_changes_are_compare_and_set(store: Store) -> None:
    record = store.journal("move", {"src": "/a", "dst": "/b"})
    store.update_action(record.id, state="done", expect="planned")
    with pytest.raises(ConflictError, match="is done now, not planned"):
        store.update_action(record.id, state="failed", expect="planned")
    assert store.action(record.id).state == "done"  # type: ignore[union-attr]


def test_one_claim_per_file_until_its_action_settles(store: Store) -> None:
    first = store.journal("move", {"src": "/a"}, claim=[1, 42])
    with pytest.raises(ConflictError, match=f"action #{first.id}") as caught:
        store.journal("copy", {"src": "/a"}, claim=[1, 42])
    assert caught.value.alive and caught.value.holder == first.id
    assert [a.id for a in store.actions()] == [first.id]  # the loser journaled nothing
    store.update_action(first.id, plan={"src": "/a", "step": 1}, expect="planned")  # still held
    with pytest.raises(ConflictError):
        store.journal("copy", {"src": "/a"}, claim=[1, 42])
    store.update_action(first.id, state="done", expect="planned")  # settled: released
    second = store.journal("copy", {"src": "/a"}, claim=[1, 42])
    assert store.query("SELECT action_id FROM claims")[0][0] == second.id


def test_a_live_claim_is_left_alone_and_a_dead_one_is_settled(
    tree: Path, store: Store, executor: Executor, stillroom_home: Path
) -> None:
    src = tree / "inbox" / "a.bin"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLDER,
            str(store.path),
            str(src),
            str(tree / "docs" / "elsewhere.bin"),
            *map(str, file_id(src)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        held = int(holder.stdout.readline())
        plan = executor.plan(action(kind="move", to=str(tree / "docs")), src)
        with pytest.raises(ActionError, match=f"process {holder.pid} is acting on this file"):
            executor.run(plan)
        assert executor.reconcile() == []  # a live process's action is its own to settle
        assert store.action(held).state == "planned"  # type: ignore[union-attr]
        assert src.exists() and [a.id for a in store.actions()] == [held]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
    record = executor.run(plan)  # the dead claim is settled first, then this one acts
    assert record.state == "done", record.error
    assert store.action(held).state == "failed"  # type: ignore[union-attr]
    assert not src.exists() and Path(record.plan["dst"]).stat().st_nlink == 1
    assert store.query("SELECT COUNT(*) FROM claims")[0][0] == 0


N_FILES = 200


def test_daemon_and_apply_on_the_same_new_files_place_each_exactly_once(
    daemon: DaemonHarness,
) -> None:
    sorted_dir = daemon.documents / "sorted"
    daemon.write_config(
        automations=[{"name": "sort", "action": {"kind": "move", "to": str(sorted_dir)}}],
        filesystem={"settle_seconds": 0.5, "pair_window_seconds": 0.5},
    )
    daemon.start()
    names = [f"file-{n:03}.txt" for n in range(N_FILES)]
    # apply starts first (its imports take about as long as the daemon's settling), then the
    # files arrive last to first: the daemon takes them in that order, apply in name order.
    apply = subprocess.Popen(
        [sys.executable, "-m", "stillroom", "apply", "--config", str(daemon.config)],
        env=daemon.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    for n, name in reversed(list(enumerate(names))):
        (daemon.downloads / name).write_text(f"content {n}\n")
    _, err = apply.communicate(timeout=60)
    assert apply.returncode == 0, err

    def settled() -> bool:
        rows = daemon.query("SELECT state FROM actions")
        return (
            not any(daemon.downloads.iterdir())
            and len(list(sorted_dir.iterdir())) >= N_FILES
            and not any(state in ("planned", "undoing") for (state,) in rows)
        )

    daemon.wait(settled, timeout=45, what="every file placed and every action settled")
    time.sleep(1.0)  # late events: nothing more may happen to the files
    placed = sorted(sorted_dir.iterdir())
    assert [p.name for p in placed] == names  # exactly once each, never "name (1)"
    assert [p.read_text() for p in placed] == [f"content {n}\n" for n in range(N_FILES)]
    assert all(p.stat().st_nlink == 1 for p in placed)
    assert not any(daemon.downloads.iterdir())

    rows = daemon.query("SELECT state, plan FROM actions")
    assert not [r for r in rows if r[0] in ("planned", "undoing")]
    done = Counter(json.loads(plan)["src"] for state, plan in rows if state == "done")
    assert done == Counter(str(daemon.downloads / name) for name in names)  # one done each
    assert daemon.query("SELECT COUNT(*) FROM claims") == [(0,)]
