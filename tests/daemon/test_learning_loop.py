"""The whole loop on real files, the real monitor and the real MiniLM:

the user files downloads by hand -> `stillroom detect` finds the task -> `distill` trains a
student that goes to shadow -> it predicts silently while the user keeps filing -> its live
agreement makes a proposal -> accepted, it sorts new downloads it is sure of and leaves an
unsure one alone -> an undo sticks -> corrections pause it.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

from daemon_harness import DaemonHarness

KINDS = {
    "Documents/Invoices": ("invoice-{n}.txt", "INVOICE #{n}\nAmount due: {a} EUR\nPay by transfer"),
    "Documents/Papers": ("paper-{n}.txt", "Abstract. We study {t} and prove a bound on {t}."),
    "Pictures/Recipes": ("recipe-{n}.txt", "Ingredients: {t}, flour, eggs. Bake for {a} minutes."),
}
TOPICS = [
    "graphs",
    "entropy",
    "queues",
    "lattices",
    "sorting",
    "sparse matrices",
    "tomatoes",
    "garlic",
    "lentils",
    "apples",
]


def make_file(
    folder: str, n: int, rng: random.Random, where: Path, topic: str | None = None
) -> Path:
    name, body = KINDS[folder]
    path = where / name.format(n=n)
    path.write_text(body.format(n=n, a=rng.randint(10, 999), t=topic or rng.choice(TOPICS)))
    return path


def file_by_hand(daemon: DaemonHarness, home: Path, batch: list[tuple[str, Path]]) -> None:
    before = len(daemon.events("file.moved"))
    for folder, path in batch:
        os.rename(path, home / folder / path.name)
    daemon.wait(
        lambda: len(daemon.events("file.moved")) >= before + len(batch),
        timeout=60,
        what="the user's moves recorded",
    )


def test_the_whole_loop(daemon: DaemonHarness) -> None:
    rng = random.Random(5)
    home = daemon.downloads.parent
    daemon.write_config(
        destinations=[str(home / "Documents"), str(home / "Pictures")],
        detector={"min_support": 20, "min_days": 1, "review_seconds": 1},
    )
    for folder in KINDS:
        (home / folder).mkdir(parents=True)
    env = {"HOME": str(home), "STILLROOM_CONFIG": str(daemon.config)}
    proc = daemon.start(**env)

    # 1. The user files 270 downloads by hand (enough to hold out the 69 a first 5% bound needs).
    batch = [(f, make_file(f, n, rng, daemon.downloads)) for n in range(90) for f in KINDS]
    daemon.wait(
        lambda: len(daemon.events("file.created")) >= len(batch),
        timeout=60,
        what="every download recorded",
    )
    file_by_hand(daemon, home, batch)

    # 2. Detection finds the task; distillation trains it; found by stillroom, it goes to shadow.
    detected = daemon.cli("detect", **env)
    assert detected.returncode == 0, detected.stderr
    assert "sort-downloads (queued)" in detected.stdout
    distilled = daemon.cli("distill", "--now", **env)
    assert distilled.returncode == 0, distilled.stderr
    assert "task sort-downloads (classify, made by detector, ready)" in distilled.stdout, (
        distilled.stdout
    )
    assert "version v1 (minilm-logreg, shadow)" in distilled.stdout

    # 3. In shadow it predicts silently; the user keeps filing by hand.
    daemon.wait(
        lambda: "learned tasks now: task:sort-downloads (shadow)" in daemon.log(),
        timeout=30,
        what="the daemon listening to the shadow student",
    )
    shadow = [(f, make_file(f, 100 + n, rng, daemon.downloads)) for n in range(5) for f in KINDS]
    daemon.wait(
        lambda: (
            len(daemon.query("SELECT id FROM predictions WHERE mode = 'shadow'")) >= len(shadow)
        ),
        timeout=90,
        what="shadow predictions",
    )
    assert all(p.exists() for _, p in shadow)  # nothing moved by stillroom
    file_by_hand(daemon, home, shadow)

    # 4. Its live agreement becomes a proposal; the user accepts.
    listed = daemon.wait(
        lambda: (
            (r := daemon.cli("proposals", **env)).stdout.count("#") == 0
            and "sort-downloads" in r.stdout
            and r
        ),
        timeout=30,
        what="proposal",
    )
    evidence = re.search(
        r"I can sort (\S+): (\d+)% agreement with your last (\d+) moves", listed.stdout
    )
    assert evidence, listed.stdout
    assert evidence[1] == "~/Downloads" and int(evidence[2]) >= 95
    assert int(evidence[3]) >= 10
    accepted = daemon.cli("proposals", "accept", "1", **env)
    assert accepted.returncode == 0, accepted.stderr
    assert "accepted" in accepted.stdout
    daemon.wait(
        lambda: "learned tasks now: task:sort-downloads\n" in daemon.log(),
        timeout=30,
        what="the daemon acting on the accepted task",
    )

    # 5. New downloads it is sure of are sorted; an unlike one is left alone. (Training drew
    # topics at random, so a paper about lentils is near the recipes: these are typical.)
    typical = {"Documents/Papers": "graphs", "Pictures/Recipes": "garlic"}
    sure = [
        (f, make_file(f, 200 + i, rng, daemon.downloads, typical.get(f)))
        for i, f in enumerate(KINDS)
    ]
    odd = daemon.downloads / "holiday.bin"
    odd.write_bytes(os.urandom(3000))
    for folder, path in sure:
        daemon.wait((home / folder / path.name).exists, timeout=60, what=f"{path.name} sorted")
    daemon.wait(
        lambda: daemon.query(
            "SELECT abstained FROM predictions p JOIN events e ON e.id = p.event_id"
            " WHERE e.path = ? AND p.mode = 'active'",
            str(odd),
        ),
        timeout=30,
        what="odd file seen",
    )
    assert odd.exists()
    assert daemon.query(
        "SELECT COUNT(*) FROM actions WHERE automation = 'task:sort-downloads' AND state = 'done'"
    ) == [(3,)]

    # 6. An undo puts a file back and it stays back.
    undo = daemon.cli("undo", **env)
    assert undo.returncode == 0, undo.stderr
    _, last = sure[-1]
    assert (daemon.downloads / last.name).exists()

    # 7. The user corrects two automated moves: the task pauses itself and says why.
    for folder, path in sure[:2]:
        wrong = home / folder / path.name
        right = home / "Documents" / path.name
        os.rename(wrong, right)
    daemon.wait(lambda: "sort-downloads paused: " in daemon.log(), timeout=30, what="a pause")
    tasks = daemon.cli("tasks", **env).stdout
    row = next(line for line in tasks.splitlines() if "sort-downloads" in line)
    assert "paused" in row
    corrections = daemon.query("SELECT COUNT(*) FROM examples WHERE source = 'correction'")
    assert corrections == [(2,)]
    later = make_file("Documents/Invoices", 300, rng, daemon.downloads)
    daemon.wait(
        lambda: [e for e in daemon.events("file.created") if e["path"] == str(later)],
        timeout=30,
        what="a download after the pause",
    )
    assert later.exists() and (daemon.downloads / last.name).exists()
    assert daemon.stop(proc) == 0
