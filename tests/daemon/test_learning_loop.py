"""From the user's own moves to a student: real files, the real monitor, the real MiniLM.

The daemon records a user filing downloads by hand; `stillroom detect` finds the repeated
task and queues it; `stillroom distill --now` trains it; the student sorts a new file.
"""

from __future__ import annotations

import os
import random

from daemon_harness import DaemonHarness

KINDS = {
    "Documents/Invoices": (
        "invoice-{n}.txt",
        "INVOICE #{n}\nAmount due: {a} EUR\nPay by bank transfer",
    ),
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


def make_file(folder: str, n: int, rng: random.Random, where: os.PathLike[str]) -> str:
    name, body = KINDS[folder]
    path = os.path.join(where, name.format(n=n))
    with open(path, "w") as fh:
        fh.write(body.format(n=n, a=rng.randint(10, 999), t=rng.choice(TOPICS)))
    return path


def test_user_moves_become_a_shadow_student(daemon: DaemonHarness) -> None:
    rng = random.Random(5)
    home = daemon.downloads.parent
    daemon.write_config(
        destinations=[str(home / "Documents"), str(home / "Pictures")],
        detector={"min_support": 20, "min_days": 1},
    )
    for folder in KINDS:
        (home / folder).mkdir(parents=True)
    proc = daemon.start(HOME=str(home))
    files = [
        (folder, make_file(folder, n, rng, daemon.downloads)) for n in range(70) for folder in KINDS
    ]
    daemon.wait(
        lambda: len(daemon.events("file.created")) >= len(files),
        timeout=60,
        what="every download recorded",
    )
    for folder, path in files:
        os.rename(path, home / folder / os.path.basename(path))
    daemon.wait(
        lambda: len(daemon.events("file.moved")) >= len(files),
        timeout=60,
        what="every move recorded",
    )
    assert daemon.stop(proc) == 0

    env = {"HOME": str(home), "STILLROOM_CONFIG": str(daemon.config)}
    detected = daemon.cli("detect", **env)
    assert detected.returncode == 0, detected.stderr
    assert "sort-downloads (queued)" in detected.stdout
    assert "classify" in detected.stdout

    distilled = daemon.cli("distill", "--now", **env)
    assert distilled.returncode == 0, distilled.stderr
    assert "task sort-downloads (classify, made by detector, ready)" in distilled.stdout
    assert "shadow" in distilled.stdout  # found by stillroom: silent until the user accepts

    fresh = make_file("Documents/Invoices", 999, rng, daemon.downloads)
    answer = daemon.cli("run", "sort-downloads", fresh, **env)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("Documents/Invoices  (confidence")
