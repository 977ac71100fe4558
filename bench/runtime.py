"""Serving through llama.cpp: process start to first classifier answer with and without torch,
batch-1 answer latency, and LoRA adapter swaps on a resident base.

A classify task is distilled from banking77 (gold intents as an ideal teacher) in a throwaway
STILLROOM_HOME; then the student worker (`python -m stillroom.service.worker`) is started
cold, with the runtime's encoder set to llama.cpp or to sentence-transformers, and timed from
spawn to its first answer. Swaps use adapters of the shape a task gets (rank 16, all linear
layers of SmolLM2-135M), random weights: swap time does not depend on what they learned.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_data import load, sample

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def distilled_home(home: Path, labels: int, per_label: int) -> tuple[int, list[str]]:
    """A home with one distilled banking77 task; its version id and some test inputs."""
    os.environ["STILLROOM_HOME"] = str(home)
    from stillroom.paths import Paths
    from stillroom.registry import Registry
    from stillroom.service.encoder import Encoder
    from stillroom.store import Store
    from stillroom.trainers.distill import distill_classifier

    rows = load("banking77", "train")
    keep = sorted({label for _, label in rows})[:labels]
    chosen = sample([r for r in rows if r[1] in keep], per_label, seed=0)
    test = [text for text, label in load("banking77", "test") if label in keep][:200]
    paths = Paths.resolve().ensure()
    with Store(paths.database) as store:
        registry = Registry(store)
        task = registry.create_task("intents", "classify", spec={"target": 0.1})
        registry.add_examples(task, [(t, label, "user", None) for t, label in chosen])
        result = distill_classifier(registry, task, Encoder(store=store), paths)
    return result.version.id, test


def cold_start(home: Path, encoder: str, version_id: int, text: str) -> dict[str, Any]:
    """Spawn a worker, ask once, time it; read its memory and whether torch got loaded."""
    config = home / "config" / "config.yaml"
    config.write_text(f"runtime:\n  encoder: {encoder}\n")
    env = {**os.environ, "STILLROOM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillroom.service.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    ready = proc.stdout.readline()
    ready_s = time.perf_counter() - started
    proc.stdin.write(json.dumps({"version": version_id, "inputs": [text]}) + "\n")
    proc.stdin.flush()
    reply = json.loads(proc.stdout.readline())
    first_s = time.perf_counter() - started
    latencies = []
    for n in range(30):  # each input new: the sentence-transformers path caches embeddings
        t = time.perf_counter()
        fresh = f"{text} (case {n}, ref {random.randrange(10**9)})"
        proc.stdin.write(json.dumps({"version": version_id, "inputs": [fresh]}) + "\n")
        proc.stdin.flush()
        proc.stdout.readline()
        latencies.append((time.perf_counter() - t) * 1000)
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    rss = _rss_mb(proc.pid)
    proc.stdin.close()
    proc.wait(timeout=30)
    assert "ready" in ready and "predictions" in reply, reply
    return {
        "encoder": encoder,
        "ready_s": round(ready_s, 2),
        "first_answer_s": round(first_s, 2),
        "answer_ms_p50": round(statistics.median(latencies), 1),
        "rss_mb": rss,
        "torch_loaded": "libtorch" in maps,
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def swaps(tmp: Path, count: int, rounds: int) -> dict[str, Any]:
    """Load `count` adapters on one base, then time switching between them and answering."""
    from safetensors.numpy import save_file

    from stillroom.service.bases import base_gguf
    from stillroom.service.runtime import ModelCache
    from stillroom.trainers.gguf_lora import export_lora_gguf
    from stillroom.trainers.lora import LoraSettings

    base = base_gguf()
    rank = LoraSettings().rank
    shapes = {
        "self_attn.q_proj": (576, 576),
        "self_attn.k_proj": (192, 576),
        "self_attn.v_proj": (192, 576),
        "self_attn.o_proj": (576, 576),
        "mlp.gate_proj": (1536, 576),
        "mlp.up_proj": (1536, 576),
        "mlp.down_proj": (576, 1536),
    }
    adapters = []
    for n in range(count):
        rng = np.random.default_rng(n)
        tensors = {}
        for layer in range(30):
            for module, (out, width) in shapes.items():
                name = f"base_model.model.model.layers.{layer}.{module}"
                a = rng.standard_normal((rank, width)) * 0.02
                tensors[f"{name}.lora_A.weight"] = a.astype(np.float32)
                b = rng.standard_normal((out, rank)) * 0.02
                tensors[f"{name}.lora_B.weight"] = b.astype(np.float32)
        folder = tmp / f"peft{n}"
        folder.mkdir()
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        modules = sorted({m.split(".")[-1] for m in shapes})
        config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": modules}
        (folder / "adapter_config.json").write_text(json.dumps(config))
        adapters.append(export_lora_gguf(folder, base, tmp / f"a{n}.gguf"))
    cache = ModelCache(budget_bytes=4 << 30)
    started = time.perf_counter()
    llm = cache.generator(base)
    base_ms = (time.perf_counter() - started) * 1000
    first_loads = []
    for path in adapters:
        t = time.perf_counter()
        cache.generator(base, path)
        first_loads.append((time.perf_counter() - t) * 1000)
    # A swap only records the adapter; llama.cpp rebuilds its graph at the next decode. So a
    # swap is timed as: set the adapter, then decode a short prompt; minus the same decode
    # with the adapter already set.
    prompt = llm.tokenize(b"<|im_start|>user\nHello there<|im_end|>\n", add_bos=True, special=True)
    swapped, same = [], []
    for _ in range(rounds):
        for path in adapters:
            t = time.perf_counter()
            cache.generator(base, path)
            llm.reset()
            llm.eval(prompt)
            swapped.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            cache.generator(base, path)
            llm.reset()
            llm.eval(prompt)
            same.append((time.perf_counter() - t) * 1000)
    set_only = sorted(cache.stats.swap_ms)
    cache.close()
    overhead = statistics.median(swapped) - statistics.median(same)
    return {
        "adapters": count,
        "adapter_mb": round(adapters[0].stat().st_size / 1e6, 1),
        "base_load_ms": round(base_ms, 1),
        "adapter_first_load_ms_p50": round(statistics.median(first_loads), 1),
        "set_ms_p50": round(set_only[len(set_only) // 2], 3),
        "decode_after_swap_ms_p50": round(statistics.median(swapped), 2),
        "decode_same_adapter_ms_p50": round(statistics.median(same), 2),
        "swap_ms_p50": round(overhead, 2),
        "swap_ms_p95": round(
            sorted(swapped)[int(len(swapped) * 0.95)] - statistics.median(same), 2
        ),
        "swaps": len(swapped),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--per-label", type=int, default=24)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "runtime.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stillroom-runtime-") as tmp:
        home = Path(tmp) / "home"
        version_id, test = distilled_home(home, args.labels, args.per_label)
        starts = [
            cold_start(home, encoder, version_id, test[i])
            for i in range(args.starts)
            for encoder in ("llama.cpp", "sentence-transformers")
        ]
        swap = swaps(Path(tmp), args.adapters, args.rounds)
    print(
        f"{'encoder':<22} {'ready s':>8} {'first answer s':>15} {'p50 ms':>7} {'RSS MB':>7} torch"
    )
    for row in starts:
        print(
            f"{row['encoder']:<22} {row['ready_s']:>8} {row['first_answer_s']:>15}"
            f" {row['answer_ms_p50']:>7} {row['rss_mb']:>7} {row['torch_loaded']}"
        )
    print(
        f"\nadapter swap on a resident base ({swap['adapters']} adapters of"
        f" {swap['adapter_mb']} MB, {swap['swaps']} swaps): p50 {swap['swap_ms_p50']} ms,"
        f" p95 {swap['swap_ms_p95']} ms (a short decode after a swap"
        f" {swap['decode_after_swap_ms_p50']} ms vs {swap['decode_same_adapter_ms_p50']} ms"
        f" without; setting it {swap['set_ms_p50']} ms); first load of an adapter p50"
        f" {swap['adapter_first_load_ms_p50']} ms; base load {swap['base_load_ms']} ms"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores",
        "starts": starts,
        "swap": swap,
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
