"""`stillroom demo` end to end: the real daemon, real files, the real MiniLM, every stage told."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_tells_the_whole_loop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("STILLROOM_HOME", "STILLROOM_CONFIG")}
    done = subprocess.run(
        [sys.executable, "-m", "stillroom", "demo", "--fast", "--seed", "1", "--keep"],
        env={**env, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    kept = re.search(r"kept the demo's home folder: (\S+)", out)
    assert kept, out
    home = Path(kept[1])
    try:
        assert "sort-downloads (queued)" in out  # a candidate found
        assert re.search(r"guarantee: answers when confidence >= [\d.]+", out)
        assert "#1 sort-downloads: accepted" in out
        # At least one fresh download auto-sorted into the folder you would have chosen...
        rows = re.findall(r"│ (\S[^│]*?) +│ (~/\S+) +│ [\d.]+ +│ (~/\S+) +│", out)
        right = [(name, put) for name, put, yours in rows if put == yours]
        assert any((home / put.removeprefix("~/") / name).exists() for name, put in right), out
        # ...at least one left alone (still in Downloads), with the reason asked for.
        assert "left in ~/Downloads" in out and "abstained: " in out
        left = re.findall(r"^  ~/Downloads/(.+?): ", out, re.M)
        assert left and all((home / "Downloads" / n).exists() for n in left)
        assert re.search(r"corrections: 1\b", out)  # a correction recorded
        assert re.search(r"undid #\d+: move ", out) and "│ undone │" in out
        assert re.search(r"undone: 1\b", out)
        assert "stopped;" in (home / ".stillroom" / "logs" / "daemon.log").read_text()
    finally:
        shutil.rmtree(home, ignore_errors=True)
