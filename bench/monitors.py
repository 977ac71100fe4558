"""Footprint of the daemon with every monitor on: idle, then with one active classifier task.

python bench/monitors.py [--seconds 60] [--files 1000] [--out FILE]

The daemon runs on a private home with the filesystem monitor (an opt-in folder of --files
files), the input monitor on a virtual X screen (Xvfb), the system monitor with the
foreground application, desktop notifications on a private session bus, the gateway and the
nightly scheduler. Phase 1 measures it idle. Phase 2 gives it one active file-sorting
classifier (distilled here from generated files), drops one download so the task's student
worker loads, and measures the daemon and its worker together.

CPU is read two ways: psutil's user+system times (the kernel's tick-sampled accounting) and
the scheduler's own run time per thread (/proc/PID/task/*/schedstat, nanoseconds): on a
virtual machine the first charges whole ticks to short wakeups, the second is exact.
Goal: <= 150 MB RSS and <= 1% CPU idle.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from footprint import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
KINDS = {
    "Documents/Invoices": (
        "invoice-{n}.txt",
        "Invoice {n}\nAmount due: {a} EUR\nPay within 30 days.",
    ),
    "Documents/Recipes": ("recipe-{n}.txt", "Recipe {n}: {t} soup\nIngredients: {t}, salt, water."),
    "Documents/Notes": ("meeting-{n}.txt", "Meeting notes {n}\nAttendees: Ann, Bo\nNext: {t}."),
}
TOPICS = ["tomatoes", "garlic", "lentils", "apples", "leeks", "beans"]


@contextlib.contextmanager
def xvfb() -> Iterator[str]:
    """A virtual X screen for the input monitor; yields its DISPLAY."""
    if shutil.which("Xvfb") is None:
        raise SystemExit("Xvfb is missing (apt-get install xvfb)")
    number = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    proc = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-noreset"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: Path(f"/tmp/.X11-unix/X{number}").exists(), 20, "Xvfb")
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def session_bus() -> Iterator[str]:
    """A private D-Bus session bus (no notification server on it: the daemon says so once)."""
    proc = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def run_ns(proc: psutil.Process) -> int:
    """Nanoseconds this process's threads have run (threads that ended are not counted)."""
    total = 0
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += int((task / "schedstat").read_text().split()[0])
    return total


def measure(pid: int, seconds: float) -> dict[str, Any]:
    """RSS (max, sampled twice a second) and CPU of the daemon and its children."""
    procs = tree(pid)
    ticks0 = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
    ns0 = {p.pid: run_ns(p) for p in procs}
    t0 = time.monotonic()
    rss_max = {p.pid: 0 for p in procs}
    while time.monotonic() - t0 < seconds:
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                rss_max[p.pid] = max(rss_max[p.pid], p.memory_info().rss)
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    ticks = sum(sum(p.cpu_times()[:2]) - ticks0[p.pid] for p in procs)
    ns = sum(run_ns(p) - ns0[p.pid] for p in procs)
    return {
        "processes": [p.name() for p in procs],
        "threads": sum(p.num_threads() for p in procs),
        "rss_mb_max": round(sum(rss_max.values()) / 2**20, 1),
        "daemon_rss_mb_max": round(rss_max[pid] / 2**20, 1),
        "cpu_percent_ticks": round(100 * ticks / elapsed, 3),
        "cpu_percent_schedstat": round(100 * ns / 1e9 / elapsed, 3),
        "seconds": round(elapsed, 1),
    }


def make_files(
    folder: Path, count: int, rng: random.Random, start: int = 0
) -> list[tuple[str, Path]]:
    made = []
    for n in range(start, start + count):
        label = rng.choice(list(KINDS))
        name, body = KINDS[label]
        path = folder / name.format(n=n)
        path.write_text(body.format(n=n, a=rng.randint(10, 999), t=rng.choice(TOPICS)))
        made.append((label, path))
    return made


def active_task(home: Path, user_home: Path, env: dict[str, str]) -> str:
    """A file-sorting classifier, distilled and accepted: the phase-2 task."""
    rng = random.Random(1)
    examples = user_home / "examples"
    examples.mkdir()
    rows = make_files(examples, 60, rng, start=10_000)
    lines = [json.dumps({"input": str(p), "output": label}) for label, p in rows]
    data = user_home / "examples.jsonl"
    data.write_text("\n".join(lines) + "\n")
    cli = [sys.executable, "-m", "stillroom"]
    for argv in (
        [
            "tasks",
            "new",
            "sort-downloads",
            "--kind",
            "classify",
            "--examples",
            str(data),
            "--files",
        ],
        ["distill", "sort-downloads", "--now"],
    ):
        done = subprocess.run(cli + argv, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    os.environ["STILLROOM_HOME"] = str(home)
    from stillroom.registry import Registry
    from stillroom.store import Store

    with Store(home / "data" / "stillroom.db") as store:
        registry = Registry(store)
        task = registry.task("sort-downloads")
        (version,) = registry.versions(task)
        registry.set_status(version.id, "active")
        registry.update_task(task, state="active")
    return f"v{version.version}"


def start_daemon(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    before = log.read_text().count("daemon ready") if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stillroom", "daemon", "--config", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: log.read_text().count("daemon ready") > before, 120, "daemon ready")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.terminate()
    return proc.wait(timeout=60)


def run(seconds: float, files: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stillroom-monitors-") as tmp, xvfb() as display:
        base = Path(tmp)
        user_home, home = base / "user", base / "home"
        downloads = user_home / "Downloads"
        downloads.mkdir(parents=True)
        for label in KINDS:
            (user_home / label).mkdir(parents=True)
        make_files(downloads, files, random.Random(0))
        config = base / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "folders": [{"path": str(downloads)}],
                    "destinations": [str(user_home / "Documents")],
                    "server": {"port": free_port()},
                    "monitors": {
                        "input": {"enabled": True, "idle_source": "pynput"},
                        "system": {"enabled": True, "foreground_app": True},
                    },
                    "notifications": {"desktop": True},
                }
            )
        )
        with session_bus() as bus:
            env = {
                **os.environ,
                "STILLROOM_HOME": str(home),
                "HOME": str(user_home),
                "DISPLAY": display,
                "XDG_SESSION_TYPE": "x11",
                "DBUS_SESSION_BUS_ADDRESS": bus,
            }
            log = base / "daemon.log"
            results: dict[str, Any] = {}
            proc = start_daemon(config, env, log)
            try:
                time.sleep(5)  # start-up settles
                results["idle"] = measure(proc.pid, seconds)
            finally:
                code = stop(proc)
            results["idle"]["sigterm_exit_code"] = code
            results["task_version"] = active_task(home, user_home, env)
            proc = start_daemon(config, env, log)
            try:
                make_files(downloads, 1, random.Random(2), start=50_000)
                wait_for(lambda: len(tree(proc.pid)) > 1, 60, "the student worker")
                time.sleep(10)  # the worker loads its model and answers
                results["one_task"] = measure(proc.pid, seconds)
            except SystemExit:
                print(log.read_text()[-3000:], file=sys.stderr)
                raise
            finally:
                code = stop(proc)
            results["one_task"]["sigterm_exit_code"] = code
            text = log.read_text()
            results["log"] = [
                line.split(": ", 1)[-1]
                for line in text.splitlines()
                if "idle time" in line or "notification service" in line or "foreground" in line
            ][:4]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS / "monitors.json")
    args = parser.parse_args()
    result = run(args.seconds, args.files)
    print(
        f"{'phase':<10} {'RSS MB':>8} {'daemon MB':>10} {'CPU % ticks':>12}"
        f" {'CPU % exact':>12}  processes"
    )
    for phase in ("idle", "one_task"):
        r = result[phase]
        print(
            f"{phase:<10} {r['rss_mb_max']:>8} {r['daemon_rss_mb_max']:>10}"
            f" {r['cpu_percent_ticks']:>12} {r['cpu_percent_schedstat']:>12}"
            f"  {', '.join(r['processes'])}"
        )
    for line in result["log"]:
        print("  log:", line)
    result["machine"] = f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    result["date"] = time.strftime("%Y-%m-%d")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
