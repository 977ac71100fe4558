"""Footprint of the daemon: idle over a folder of many files, then a burst of new files.

python bench/footprint.py [--files 10000] [--idle 60] [--burst 5000] [--out FILE]
Goal: <= 150 MB RSS and <= 1% CPU idle; every burst file recorded exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: object, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def created_paths(db: Path) -> list[str]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT path FROM events WHERE kind = 'file.created'").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()
    return [r[0] for r in rows]


def run(files: int, idle: float, burst: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="stillroom-footprint-") as tmp:
        base = Path(tmp)
        watched, dest, home = base / "Downloads", base / "Documents", base / "home"
        watched.mkdir()
        dest.mkdir()
        for i in range(files):
            (watched / f"existing-{i:05d}.txt").write_bytes(b"x" * (i % 500))
        config = base / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "folders": [{"path": str(watched)}],
                    "destinations": [str(dest)],
                    "filesystem": {"settle_seconds": 0.5},
                    "server": {"port": free_port()},  # the gateway is part of the footprint
                }
            )
        )
        env = {**os.environ, "STILLROOM_HOME": str(home)}
        log = (base / "daemon.log").open("w")
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "stillroom", "daemon", "--config", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            ready = wait_for(lambda: "ready" in (base / "daemon.log").read_text(), 120, "ready")
            p = psutil.Process(proc.pid)
            time.sleep(2)  # let start-up settle before measuring idle
            cpu0, t0 = p.cpu_times(), time.monotonic()
            rss_max = 0
            while time.monotonic() - t0 < idle:
                rss_max = max(rss_max, p.memory_info().rss)
                time.sleep(0.5)
            cpu1, t1 = p.cpu_times(), time.monotonic()
            idle_cpu = 100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (t1 - t0)

            db = home / "data" / "stillroom.db"
            before = len(created_paths(db))
            b0 = time.monotonic()
            for i in range(burst):
                (watched / f"burst-{i:05d}.bin").write_bytes(os.urandom(64))
            written = time.monotonic() - b0
            expected = {str(watched / f"burst-{i:05d}.bin") for i in range(burst)}

            def all_recorded() -> bool:
                return expected <= set(created_paths(db))

            try:
                recorded_in = wait_for(all_recorded, 300, "burst recorded")
                timed_out = False
            except SystemExit:
                recorded_in, timed_out = float("nan"), True
            paths = created_paths(db)[before:]
            burst_paths = [p_ for p_ in paths if p_ in expected]
            burst_rss = p.memory_info().rss
            s0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            stop_s = time.monotonic() - s0
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        overflowed = "overflow" in (base / "daemon.log").read_text().lower()
        return {
            "files_watched": files,
            "start_to_ready_s": round(ready, 2),
            "idle_seconds": idle,
            "idle_rss_mb_max": round(rss_max / 2**20, 1),
            "idle_cpu_percent": round(idle_cpu, 3),
            "burst_files": burst,
            "burst_write_s": round(written, 2),
            "burst_recorded_s": round(recorded_in, 2),
            "burst_recorded": len(set(burst_paths)),
            "burst_duplicates": len(burst_paths) - len(set(burst_paths)),
            "burst_lost": len(expected - set(burst_paths)),
            "burst_timed_out": timed_out,
            "inotify_overflow_seen": overflowed,
            "rss_after_burst_mb": round(burst_rss / 2**20, 1),
            "sigterm_exit_code": code,
            "sigterm_stop_s": round(stop_s, 2),
            "total_s": round(time.monotonic() - started, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--burst", type=int, default=5_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "footprint.json")
    args = parser.parse_args()
    result = run(args.files, args.idle, args.burst)
    width = max(len(k) for k in result)
    print(f"{'measure':<{width}}  value")
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    ok = (
        result["burst_lost"] == 0
        and result["burst_duplicates"] == 0
        and result["sigterm_exit_code"] == 0
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result["machine"] = f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    result["date"] = time.strftime("%Y-%m-%d")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
