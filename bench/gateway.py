"""Gateway overhead: the latency it adds to a forwarded call, at a steady request rate.

    python bench/gateway.py [--rate 100] [--seconds 20] [--out bench/results/gateway.json]

A local upstream that speaks the OpenAI API (tests/upstream.py, in its own process) answers
every call at once. The same open-loop load (requests sent on a fixed schedule, not when
the previous one returns) goes once straight to the upstream and once through
`stillroom serve` (its own process, recording every call in its store); the overhead is the
difference of the latency percentiles. Goal: <= 5 ms at p99 for 100 requests/s.

Every call still has its template computed and looked up among learned tasks (none here);
bench/gateway_tasks.py measures calls whose template belongs to a learned task.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
GOAL_P99_MS = 5.0
TEMPLATE = "Route this support ticket to billing, shipping, technical or other.\n\n{ticket}"
TICKETS = [
    "I was charged twice for my subscription this month",
    "My parcel never arrived and the tracking is stuck",
    "The app crashes every time I try to log in",
    "Can you tell me your opening hours?",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def upstream_main(port_file: str) -> None:
    """Child mode: run the test upstream until killed, writing its port to a file."""
    sys.path.insert(0, str(TESTS))
    from upstream import Upstream

    with Upstream() as up:
        Path(port_file).write_text(str(up.port))
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered at {url}")


def body(i: int) -> dict[str, Any]:
    ticket = f"{TICKETS[i % len(TICKETS)]} (order {1000 + i})"
    return {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": TEMPLATE.format(ticket=ticket)}],
    }


async def load(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Send rate x seconds requests on a fixed schedule; latency of each, in ms."""
    total = int(rate * seconds)
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        for i in range(20):  # warm-up: connections, imports, caches
            await client.post(url, json=body(i), headers={"Authorization": "Bearer sk-bench"})

        async def one(i: int, at: float) -> None:
            nonlocal failures
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            start = time.perf_counter()
            reply = await client.post(
                url, json=body(i), headers={"Authorization": "Bearer sk-bench"}
            )
            latencies.append((time.perf_counter() - start) * 1000)
            failures += reply.status_code != 200

        begin = time.perf_counter() + 0.1
        await asyncio.gather(*(one(i, begin + i / rate) for i in range(total)))
        wall = time.perf_counter() - begin
    ms = np.array(latencies)
    return {
        "requests": total,
        "failures": failures,
        "achieved_rate": round(total / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def run(rate: float, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stillroom-gateway-") as tmp:
        base = Path(tmp)
        port_file = base / "upstream.port"
        upstream = subprocess.Popen(
            [sys.executable, __file__, "--upstream-only", str(port_file)],
        )
        gateway = None
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or upstream.poll() is not None:
                    raise SystemExit("the upstream did not start")
                time.sleep(0.05)
            upstream_url = f"http://127.0.0.1:{port_file.read_text()}/v1"
            home = base / "home"
            port = free_port()
            env = {
                **os.environ,
                "STILLROOM_HOME": str(home),
                "STILLROOM_UPSTREAM_BASE_URL": upstream_url,
            }
            gateway = subprocess.Popen(
                [sys.executable, "-m", "stillroom", "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_http(f"http://127.0.0.1:{port}/stillroom/health")
            direct = asyncio.run(load(f"{upstream_url}/chat/completions", rate, seconds))
            through = asyncio.run(
                load(f"http://127.0.0.1:{port}/v1/chat/completions", rate, seconds)
            )
        finally:
            for proc in (gateway, upstream):
                if proc is not None:
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        database = home / "data" / "stillroom.db"
        recorded = count_calls(database) if database.exists() else None
    overhead = {key: round(through[key] - direct[key], 2) for key in ("p50_ms", "p90_ms", "p99_ms")}
    return {
        "rate": rate,
        "seconds": seconds,
        "direct": direct,
        "gateway": through,
        "overhead_ms": overhead,
        "recorded_calls": recorded,
        "goal_p99_ms": GOAL_P99_MS,
        "met": overhead["p99_ms"] <= GOAL_P99_MS,
    }


def count_calls(db: Path) -> int:
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT COUNT(*) FROM events WHERE kind = 'llm.call'").fetchone()[0])
    finally:
        con.close()


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'path':<26}{'rate':>6}{'sent':>6}{'fail':>6}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
    ]
    for r in rows:
        for label, m in (("direct", r["direct"]), ("through the gateway", r["gateway"])):
            lines.append(
                f"{label:<26}{m['achieved_rate']:>6.0f}{m['requests']:>6}{m['failures']:>6}"
                f"{m['p50_ms']:>9.2f}{m['p90_ms']:>9.2f}{m['p99_ms']:>9.2f}"
            )
        o = r["overhead_ms"]
        lines.append(
            f"{'overhead':<26}{'':>18}{o['p50_ms']:>9.2f}{o['p90_ms']:>9.2f}{o['p99_ms']:>9.2f}"
            f"   goal p99 <= {GOAL_P99_MS} ms: {'met' if r['met'] else 'NOT met'}"
        )
        lines.append(f"llm.call events recorded by the gateway: {r['recorded_calls']}")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--upstream-only":
        upstream_main(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gateway.json")
    args = parser.parse_args()
    rows = [run(args.rate, args.seconds)]
    print(table(rows))
    result = {
        "benchmark": "gateway overhead",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
