"""Run a tier of benchmarks: `python bench/run.py quick|full`. Each writes bench/results/."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIERS: dict[str, list[list[str]]] = {
    "quick": [
        ["reliability.py", "--actions", "1000"],
        ["footprint.py", "--files", "10000", "--idle", "60", "--burst", "5000"],
        ["monitors.py", "--seconds", "60"],
        ["classify.py", "--tier", "quick"],
        ["guarantee_power.py"],
        ["gateway.py", "--rate", "100", "--seconds", "20"],
        ["gateway_tasks.py", "--n", "16", "--test", "1000"],
        ["runtime.py", "--out", str(HERE / "results" / "runtime.json")],
        [
            "generative.py",
            "--task",
            "addresses",
            "--n",
            "400",
            "--test",
            "146",
            "--out",
            str(HERE / "results" / "generative-tagger-quick.json"),
        ],
        [
            "generative.py",
            "--task",
            "addresses",
            "--student",
            "lora",
            "--n",
            "100",
            "--test",
            "60",
            "--out",
            str(HERE / "results" / "generative-quick.json"),
        ],
    ],
    "full": [
        [
            "reliability.py",
            "--actions",
            "5000",
            "--out",
            str(HERE / "results" / "reliability-full.json"),
        ],
        [
            "footprint.py",
            "--files",
            "50000",
            "--idle",
            "300",
            "--burst",
            "20000",
            "--out",
            str(HERE / "results" / "footprint-full.json"),
        ],
        [
            "monitors.py",
            "--seconds",
            "300",
            "--files",
            "10000",
            "--out",
            str(HERE / "results" / "monitors-full.json"),
        ],
        ["classify.py", "--tier", "full"],
        ["guarantee_power.py", "--full"],
        [
            "gateway.py",
            "--rate",
            "100",
            "--seconds",
            "60",
            "--out",
            str(HERE / "results" / "gateway-full.json"),
        ],
        [
            "gateway_tasks.py",
            "--n",
            "16",
            "--test",
            "3080",
            "--out",
            str(HERE / "results" / "gateway-tasks-full.json"),
        ],
        [
            "runtime.py",
            "--starts",
            "5",
            "--adapters",
            "8",
            "--out",
            str(HERE / "results" / "runtime-full.json"),
        ],
        [
            "generative.py",
            "--task",
            "addresses",
            *("--n", "50", "--n", "100", "--n", "200", "--n", "400", "--n", "800", "--n", "1513"),
            "--test",
            "146",
            "--out",
            str(HERE / "results" / "generative-addresses-tagger.json"),
        ],
        [
            "generative.py",
            "--task",
            "addresses",
            "--student",
            "lora",
            *("--n", "50", "--n", "100", "--n", "200", "--n", "400"),
            "--test",
            "146",
            "--out",
            str(HERE / "results" / "generative-addresses.json"),
        ],
        [
            "generative.py",
            "--task",
            "tldr",
            *("--n", "50", "--n", "150"),
            "--test",
            "100",
            "--out",
            str(HERE / "results" / "generative-tldr.json"),
        ],
    ],
}


def main() -> int:
    tier = sys.argv[1] if len(sys.argv) > 1 else "quick"
    failed = []
    for script, *args in TIERS[tier]:
        print(f"\n== {script} {' '.join(args)}", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / script), *args])
        print(f"== {script}: exit {code} in {time.monotonic() - start:.0f} s", flush=True)
        if code:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
