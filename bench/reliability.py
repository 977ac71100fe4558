"""Reliability under SIGKILL: random file actions in workers killed at random moments.

    python bench/reliability.py [--actions 1000] [--seed N] [--out bench/results/reliability.json]

Builds a tree of random files (names that collide on purpose; part of it on a second
filesystem when /dev/shm is one), then runs N random actions of every kind in worker
processes that the parent SIGKILLs on random timers, or that die at a random checkpoint
(STILLROOM_CRASH_AT). Each new worker reconciles first. Then it checks that no file was
lost, duplicated or left as a temp, undoes every done action newest first (killed the same
way), and checks that the tree is the original, byte for byte. Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from stillroom.config import ActionConfig
from stillroom.errors import ActionError, UndoError
from stillroom.paths import Paths
from stillroom.service.hooks.actions import REGISTRY
from stillroom.service.hooks.actions.base import CRASH_ENV
from stillroom.service.hooks.actions.move import Move
from stillroom.service.hooks.executor import Executor
from stillroom.service.hooks.naming import is_temp
from stillroom.store import Store

STEMS = ["report", "invoice", "photo", "notes", "data", "scan", "draft", "IMG_0001", "a"]
EXTS = [".pdf", ".txt", ".bin", ".csv", ".tar.gz", ""]
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".gif": "GIF", ".webp": "WEBP"}
IMAGE_EXTS = tuple(IMAGE_FORMATS)
TEMPLATES = ["{parent}{ext}", "copy{ext}", "{date}{ext}", "{stem} v2{ext}", "x{ext}"]
WEIGHTS = {"move": 30, "rename": 15, "copy": 20, "convert_image": 15, "command": 20}


def checkpoints(undo: bool) -> list[str]:
    names = []
    for kind, cls in REGISTRY.items():
        steps = list(cls.undo_checkpoints if undo else cls.checkpoints)
        if cls is Move:
            steps += Move.exdev_undo_checkpoints if undo else Move.exdev_checkpoints
        names += [f"{kind}.{step}" for step in dict.fromkeys(steps)]
    return names


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(roots: list[str]) -> tuple[dict[str, bytes], set[str]]:
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    for root in roots:
        for folder, _, names in os.walk(root):
            dirs.add(folder)
            for name in names:
                files[os.path.join(folder, name)] = Path(folder, name).read_bytes()
    return files, dirs


# -- the tree ---------------------------------------------------------------------------


def build_tree(work: Path, rng: random.Random, n_files: int) -> dict[str, Any]:
    from PIL import Image

    roots = [work / "tree"]
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(work).st_dev:
        roots.append(Path(tempfile.mkdtemp(prefix="stillroom-bench-", dir=shm)) / "tree")
    folders = [roots[0] / f for f in ("inbox", "docs", "pics", "archive")]
    folders += [r / "elsewhere" for r in roots[1:]]
    for folder in folders:
        folder.mkdir(parents=True)
    for i in range(n_files):
        folder = rng.choice(folders)
        if i % 5 == 0:
            ext = rng.choice(list(IMAGE_FORMATS))
            side = rng.randint(4, 40)
            mode = "RGB" if ext == ".jpg" else rng.choice(["RGBA", "RGB", "L", "P"])
            pixels = rng.randbytes(side * side * len(mode))
            path = folder / f"{rng.choice(STEMS)}{ext}"
            if not path.exists():
                Image.frombytes(mode, (side, side), pixels).save(path, IMAGE_FORMATS[ext])
            continue
        size = rng.choice(
            [0, rng.randint(1, 512), rng.randint(512, 32_768), rng.randint(1, 1 << 20)]
        )
        path = folder / f"{rng.choice(STEMS)}{rng.choice(EXTS)}"
        if path.exists():  # a collision planned on purpose: same name, another folder
            path = rng.choice([f for f in folders if f != folder]) / path.name
        if not path.exists():
            path.write_bytes(rng.randbytes(size))
    outside = work / "command-out"
    outside.mkdir()
    return {
        "roots": [str(r) for r in roots],
        "folders": [str(f) for f in folders],
        "outside": str(outside),
    }


# -- the worker -------------------------------------------------------------------------


def pick(rng: random.Random, layout: dict[str, Any], count: int) -> tuple[dict[str, Any], Path]:
    files = [os.path.join(d, n) for r in layout["roots"] for d, _, ns in os.walk(r) for n in ns]
    images = [f for f in files if f.lower().endswith(IMAGE_EXTS)]
    kind = rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
    folder = rng.choice(layout["folders"])
    if rng.random() < 0.1:
        folder = os.path.join(folder, rng.choice(["new", "2024", "sorted"]))
    if kind == "convert_image" and images:
        return {
            "kind": kind,
            "format": rng.choice(["jpeg", "png", "webp"]),
            "to": rng.choice([None, folder]),
        }, Path(rng.choice(images))
    path = Path(rng.choice(files))
    if kind in ("move", "copy", "convert_image"):
        return {"kind": "move" if kind == "convert_image" else kind, "to": folder}, path
    if kind == "rename":
        return {"kind": kind, "name": rng.choice(TEMPLATES)}, path
    out = os.path.join(layout["outside"], f"{os.getpid()}-{count}")
    argv = rng.choice(
        [
            ["cp", "{path}", out],
            ["tee", out + ".json"],
            ["sha256sum", "{path}"],
            ["false"],
            ["sleep", "5"],
        ]
    )
    return {"kind": kind, "argv": argv, "timeout": 0.05 if argv[0] == "sleep" else 10}, path


def worker(mode: str, work: Path, target: int, seed: int) -> None:
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(ActionConfig)
    layout = json.loads((work / "layout.json").read_text())
    rng = random.Random(seed)
    with Store(Paths.resolve().database) as store:
        executor = Executor(store)
        executor.reconcile()
        print("ready", flush=True)
        if mode == "undo":
            for record in store.actions(limit=1_000_000, states=["done"]):
                if record.kind == "command":
                    continue
                try:
                    executor.undo(record.id)
                except UndoError as exc:
                    with open(work / "undo-errors.jsonl", "a") as fh:
                        fh.write(json.dumps({"id": record.id, "error": str(exc)}) + "\n")
            return
        while (count := sum(store.count_actions().values())) < target:
            config, path = pick(rng, layout, count)
            try:
                plan = executor.plan(adapter.validate_python(config), path)
            except ActionError:
                continue  # cannot apply (same folder, same name, ...): pick another
            executor.run(plan, automation="bench")


# -- the parent -------------------------------------------------------------------------


def unfinished(db: Path) -> set[int]:
    with Store(db) as store:
        return {r.id for r in store.unfinished_actions()}


def phase(
    mode: str,
    work: Path,
    args: argparse.Namespace,
    rng: random.Random,
    env: dict[str, str],
    db: Path,
) -> dict[str, int]:
    """Run workers until one finishes; kill them at random moments meanwhile.

    Most timers start once the worker has reconciled, so the kill lands among actions; a
    few start at spawn, so some land in the start-up or in reconcile itself.
    """
    kills = Counter[str]()
    names = checkpoints(undo=mode == "undo")
    while True:
        worker_env = dict(env)
        if rng.random() < args.checkpoint_share:
            worker_env[CRASH_ENV] = rng.choice(names)
        before = unfinished(db)
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            mode,
            "--workdir",
            str(work),
            "--actions",
            str(args.actions),
            "--seed",
            str(rng.randrange(1 << 30)),
        ]
        proc = subprocess.Popen(cmd, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        early = rng.random() < args.early_share
        if early:
            timer = rng.uniform(0.05, 0.4)
        else:
            proc.stdout.readline()  # "ready", or nothing when it died first
            timer = rng.uniform(0.0, args.timer * (0.3 if mode == "undo" else 1.0))
        try:
            _, err = proc.communicate(timeout=timer)
            by_timer = False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate()
            by_timer = True
        if proc.returncode == 0:
            return dict(kills)
        if proc.returncode != -signal.SIGKILL:
            sys.exit(f"a {mode} worker failed ({proc.returncode}):\n{err.decode()[-3000:]}")
        kills["total"] += 1
        kills["by_timer" if by_timer else "at_checkpoint"] += 1
        kills["early_timer"] += by_timer and early
        if unfinished(db) - before:
            kills["mid_action"] += 1


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="stillroom-bench-"))
    layout = build_tree(work, rng, args.files)
    (work / "layout.json").write_text(json.dumps(layout))
    env = {**os.environ, "STILLROOM_HOME": str(work / "home")}
    env.pop(CRASH_ENV, None)
    db = work / "home" / "data" / "stillroom.db"
    Store(db).close()
    roots = layout["roots"]
    original, original_dirs = snapshot(roots)

    act_kills = phase("act", work, args, rng, env, db)
    with Store(db) as store:
        records = store.actions(limit=1_000_000)
    created = [
        r.plan["sha256"]
        for r in records
        if r.state == "done" and r.kind in ("copy", "convert_image")
    ]
    files, _ = snapshot(roots)
    leftovers = [p for p in files if is_temp(os.path.basename(p))]
    expected = Counter(sha(b) for b in original.values()) + Counter(created)
    found = Counter(sha(b) for b in files.values())
    checks = {
        "journal settled after actions": all(r.state in ("done", "failed") for r in records),
        "no file lost or duplicated": found == expected,
        "no temp files after actions": not leftovers,
    }
    by_kind = {k: dict(Counter(r.state for r in records if r.kind == k)) for k in REGISTRY}
    across = sum(r.kind == "move" and r.plan.get("method") == "copy" for r in records)

    undo_kills = phase("undo", work, args, rng, env, db)
    with Store(db) as store:
        final = store.actions(limit=1_000_000)
    after, after_dirs = snapshot(roots)
    undo_errors = (
        (work / "undo-errors.jsonl").read_text().splitlines()
        if (work / "undo-errors.jsonl").exists()
        else []
    )
    checks["every done action undone"] = (
        all(
            r.state == ("done" if r.kind == "command" else "undone")
            for r in final
            if r.state != "failed"
        )
        and not undo_errors
    )
    checks["tree restored byte for byte"] = after == original
    checks["folders restored"] = after_dirs == original_dirs
    checks["no temp files after undo"] = not [p for p in after if is_temp(os.path.basename(p))]
    recoveries = Counter(x for r in final for x in r.plan.get("recoveries", []))
    result = {
        "actions": len(records),
        "seed": args.seed,
        "files": len(original),
        "second_filesystem": len(roots) > 1,
        "by_kind_and_state": by_kind,
        "moves_across_filesystems": across,
        "kills": {"actions_phase": act_kills, "undo_phase": undo_kills},
        "reconciled": dict(recoveries),
        "undone": sum(r.state == "undone" for r in final),
        "undo_errors": undo_errors,
        "checks": checks,
        "passed": all(checks.values()),
        "wall_s": round(time.monotonic() - started, 1),
    }
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if result["passed"] and not args.keep:
        shutil.rmtree(work)
        for root in roots[1:]:
            shutil.rmtree(Path(root).parent, ignore_errors=True)
    else:
        print(f"work folder kept: {work}")
    return 0 if result["passed"] else 1


def report(result: dict[str, Any]) -> None:
    print(f"{'kind':<15}{'done':>7}{'failed':>8}{'other':>7}")
    for kind, states in result["by_kind_and_state"].items():
        other = sum(v for k, v in states.items() if k not in ("done", "failed"))
        print(f"{kind:<15}{states.get('done', 0):>7}{states.get('failed', 0):>8}{other:>7}")
    for name, kills in result["kills"].items():
        print(
            f"kills in the {name.replace('_', ' ')}: {kills.get('total', 0)} (mid-action "
            f"{kills.get('mid_action', 0)}, at a checkpoint {kills.get('at_checkpoint', 0)},"
            f" by timer {kills.get('by_timer', 0)})"
        )
    print(f"moves across filesystems: {result['moves_across_filesystems']}")
    print(f"reconciled: {result['reconciled']}")
    print(f"undone: {result['undone']}, undo errors: {len(result['undo_errors'])}")
    for name, ok in result["checks"].items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    print(
        f"{result['actions']} actions on {result['files']} files, {result['wall_s']} s:"
        f" {'PASSED' if result['passed'] else 'FAILED'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--files", type=int, default=240)
    parser.add_argument("--out", type=Path, default=Path("bench/results/reliability.json"))
    parser.add_argument(
        "--checkpoint-share",
        type=float,
        default=0.5,
        help="Share of workers told to die at a random checkpoint.",
    )
    parser.add_argument(
        "--timer",
        type=float,
        default=0.06,
        help="A ready worker is killed within this many seconds.",
    )
    parser.add_argument(
        "--early-share",
        type=float,
        default=0.1,
        help="Share of workers whose kill timer starts at spawn (start-up, reconcile).",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the work folder.")
    parser.add_argument("--worker", choices=["act", "undo"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.workdir, args.actions, args.seed)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
