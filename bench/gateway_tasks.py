"""A repeated prompt taken over: banking77 queries wrapped in one prompt template, sent
through the daemon's gateway to a teacher that answers with the gold intent.

    python bench/gateway_tasks.py [--n 16] [--shadow 400] [--test 1000] [--out FILE]

1. N queries per intent from the TRAIN file go through the gateway (recorded, forwarded).
2. `stillroom detect` finds the template; `stillroom distill --now` trains the student,
   which starts in shadow.
3. More train queries are forwarded while the shadow answers silently; once its agreement
   earns a proposal, `stillroom proposals accept` makes it active.
4. TEST queries (never seen) go through: the share answered locally, the agreement of local
   answers with the teacher, audits, and the latency of a local answer against a forwarded
   one (the upstream answers at once: a real provider adds its own seconds).

Everything runs as a user would: the real daemon, the real CLI, the official openai client.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from bench_data import load, sample  # noqa: E402
from gateway import free_port, wait_http  # noqa: E402

INSTRUCTION = "Which banking77 intent is this customer message? Answer with the intent only."
MODEL = "gpt-test"
DIRECT_CALLS = 200  # straight to the upstream, for the baseline


def upstream_main(port_file: str) -> None:
    """Child mode: the test upstream, answering each query with its gold intent."""
    from upstream import Upstream, user_text

    gold = dict(load("banking77", "train")) | dict(load("banking77", "test"))

    def oracle(messages: list[dict[str, Any]]) -> str:
        return gold.get(user_text(messages).split("\n\n", 1)[-1], "unknown")

    with Upstream(oracle) as up:
        Path(port_file).write_text(str(up.port))
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


def ask(client: Any, query: str) -> tuple[str, bool, float]:
    """(answer, answered locally, ms) of one call."""
    start = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": f"{INSTRUCTION}\n\n{query}"}]
    )
    ms = (time.perf_counter() - start) * 1000
    reply = raw.parse()
    local = raw.headers.get("x-stillroom-answered-by") == "local"
    return reply.choices[0].message.content or "", local, ms


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "stillroom", *args], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"stillroom {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def run(n: int, shadow: int, test: int) -> dict[str, Any]:
    import openai

    train = load("banking77", "train")
    handed = sample(train, n, 0)
    seen = {t for t, _ in handed}
    rest = [row for row in train if row[0] not in seen]
    random.Random(1).shuffle(rest)
    tests = load("banking77", "test")
    random.Random(2).shuffle(tests)
    tests = tests[:test]
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="stillroom-gwtasks-") as tmp:
        base = Path(tmp)
        port_file = base / "upstream.port"
        upstream = subprocess.Popen([sys.executable, __file__, "--upstream-only", str(port_file)])
        daemon = None
        try:
            while not port_file.exists() or not port_file.read_text():
                if upstream.poll() is not None:
                    raise SystemExit("the upstream did not start")
                time.sleep(0.05)
            port = free_port()
            config = base / "config.json"
            config.write_text(
                json.dumps(
                    {
                        "folders": [],
                        "server": {"port": port},
                        "detector": {"min_days": 1, "review_seconds": 2},
                        "gateway": {
                            "openai": {"base_url": f"http://127.0.0.1:{port_file.read_text()}/v1"},
                            "prices": {MODEL: {"input": 0.15, "output": 0.6}},
                        },
                    }
                )
            )
            env = {
                **os.environ,
                "STILLROOM_HOME": str(base / "home"),
                "STILLROOM_CONFIG": str(config),
            }
            daemon = subprocess.Popen(
                [sys.executable, "-m", "stillroom", "daemon"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_http(f"http://127.0.0.1:{port}/stillroom/health")
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-bench", max_retries=0
            )
            started = time.perf_counter()
            for text, _ in handed:
                ask(client, text)
            timings["record_s"] = time.perf_counter() - started

            started = time.perf_counter()
            detected = cli(env, "detect")
            timings["detect_s"] = time.perf_counter() - started
            started = time.perf_counter()
            distilled = cli(env, "distill", "--now")
            timings["distill_s"] = time.perf_counter() - started
            card = cli(env, "tasks")

            started = time.perf_counter()
            proposal = None
            shadow_ms = [ask(client, text)[2] for text, _ in rest[:shadow]]
            deadline = time.monotonic() + 60
            while proposal is None and time.monotonic() < deadline:
                found = re.search(r"^\W*(\d+)\W", cli(env, "proposals"), re.M)
                proposal = found[1] if found else None
                time.sleep(1)
            if proposal is None:
                print((base / "home" / "logs" / "daemon.log").read_text()[-3000:])
                raise SystemExit(
                    f"no proposal after {shadow} shadow calls:\n{detected}\n{distilled}\n{card}"
                )
            cli(env, "proposals", "accept", proposal)
            time.sleep(3)  # the answerer re-reads its task table every few seconds
            timings["shadow_s"] = time.perf_counter() - started

            local_ms, forwarded_ms, agree, local_n = [], [], 0, 0
            for text, label in tests:
                said, local, ms = ask(client, text)
                if local:
                    local_n += 1
                    agree += said == label
                    local_ms.append(ms)
                else:
                    forwarded_ms.append(ms)
            direct = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port_file.read_text()}/v1",
                api_key="sk-bench",
                max_retries=0,
            )
            direct_ms = [ask(direct, text)[2] for text, _ in tests[:DIRECT_CALLS]]
            savings = cli(env, "savings")
            tasks = cli(env, "tasks")
        finally:
            for proc in (daemon, upstream):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM if proc is daemon else signal.SIGINT)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()

    def pct(ms: list[float], q: float) -> float | None:
        return round(float(np.percentile(ms, q)), 1) if ms else None

    return {
        "n_per_class": n,
        "recorded_calls": len(handed),
        "shadow_calls": shadow,
        "test_calls": len(tests),
        "answered_locally": local_n,
        "local_share": round(local_n / len(tests), 4),
        "local_agreement": round(agree / local_n, 4) if local_n else None,
        "local_ms": {"p50": pct(local_ms, 50), "p95": pct(local_ms, 95)},
        "forwarded_ms": {"p50": pct(forwarded_ms, 50), "p95": pct(forwarded_ms, 95)},
        "shadow_forwarded_ms": {"p50": pct(shadow_ms, 50), "p95": pct(shadow_ms, 95)},
        "direct_ms": {"p50": pct(direct_ms, 50), "p95": pct(direct_ms, 95)},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "detect_output": detected.strip(),
        "distill_output": distilled.strip().splitlines()[-3:],
        "tasks": tasks,
        "savings": savings,
    }


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--upstream-only":
        upstream_main(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--shadow", type=int, default=400)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "gateway-tasks.json"
    )
    args = parser.parse_args()
    result = run(args.n, args.shadow, args.test)
    r = result
    print(r["tasks"])
    print(r["savings"])
    print(
        f"banking77 through the gateway, {r['n_per_class']}/intent recorded:"
        f" {r['answered_locally']}/{r['test_calls']} test calls answered locally"
        f" ({r['local_share']:.1%}), agreement of local answers {r['local_agreement']}"
        f"\nlatency p50/p95: local {r['local_ms']['p50']}/{r['local_ms']['p95']} ms,"
        f" forwarded {r['forwarded_ms']['p50']}/{r['forwarded_ms']['p95']} ms,"
        f" forwarded in shadow {r['shadow_forwarded_ms']['p50']}/{r['shadow_forwarded_ms']['p95']}"
        f" ms, straight to the upstream {r['direct_ms']['p50']}/{r['direct_ms']['p95']} ms"
        f" (it answers at once)\nseconds: {r['seconds']}"
    )
    out = {
        "benchmark": "banking77 through the gateway",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
