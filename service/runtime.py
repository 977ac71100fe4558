"""The model cache: GGUF models held by llama.cpp, loaded on first use, kept while used.

Each shared model (the sentence encoder, a generative base) is loaded once; a task's own part
is tiny: a classifier head (numpy, held by the student) or a LoRA adapter, which is swapped on
its resident base in milliseconds instead of reloading the base. Entries expire after
`keep_alive` seconds unused; beyond the memory budget the least recently used unpinned entry
goes first. Sizes are the GGUF files plus the context's KV cache: what llama.cpp allocates.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stillroom.errors import ModelError

log = logging.getLogger("stillroom.service")

ENCODER, BASE, ADAPTER = "encoder", "base", "adapter"
BASE_CONTEXT = 2048  # tokens of context for a generative base: prompt + answer
Clock = Callable[[], float]


@dataclass
class Entry:
    """One resident model: what it is, what it costs, how it has been used."""

    key: str
    kind: str
    path: Path
    handle: Any  # llama_cpp.Llama, or an adapter pointer for ADAPTER
    size: int
    load_ms: float
    loaded_at: float
    last_used: float
    base: str | None = None  # an adapter's base key
    hits: int = 0
    pinned: bool = False

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "size_mb": round(self.size / 1e6, 1),
            "load_ms": round(self.load_ms, 1),
            "hits": self.hits,
            "idle_s": round(now - self.last_used, 1),
            "pinned": self.pinned,
        }


@dataclass
class CacheStats:
    loads: int = 0
    hits: int = 0
    evictions: int = 0
    expirations: int = 0
    swaps: int = 0
    swap_ms: list[float] = field(default_factory=list)


class ModelCache:
    """GGUF models on demand, under a memory budget, with a keep-alive time."""

    def __init__(
        self,
        budget_bytes: int = 1 << 30,
        keep_alive: float = 600.0,
        threads: int | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.budget = budget_bytes
        self.keep_alive = keep_alive
        self.threads = threads
        self.clock = clock
        self.stats = CacheStats()
        self._entries: dict[str, Entry] = {}
        self._pins: set[str] = set()
        self._active: dict[str, str | None] = {}  # base key -> the adapter set on its context
        self._lock = threading.RLock()

    # -- using models ---------------------------------------------------------------------

    def encoder(self, path: Path) -> Any:
        """The llama.cpp encoder (embedding mode, mean pooling) for a GGUF file."""
        return self._get(path, ENCODER).handle

    def generator(self, base: Path, adapter: Path | None = None) -> Any:
        """The base's llama.cpp model with `adapter` (or none) set on its context."""
        with self._lock:
            entry = self._get(base, BASE)
            wanted = self._get(adapter, ADAPTER, base=entry.key) if adapter else None
            self._set_adapter(entry, wanted)
            return entry.handle

    # -- explicit control -----------------------------------------------------------------

    def load(self, path: Path, kind: str, base: Path | None = None) -> Entry:
        """Load now (or touch) a model; an adapter names its base."""
        with self._lock:
            base_key = self._get(base, BASE).key if kind == ADAPTER and base else None
            if kind == ADAPTER and base_key is None:
                raise ModelError(f"{path}: an adapter is loaded onto a base; name the base")
            return self._get(path, kind, base=base_key)

    def unload(self, path: Path) -> bool:
        """Drop a model (a base takes its adapters with it); False when it was not loaded."""
        with self._lock:
            entry = self._entries.get(_key(path))
            if entry is None:
                return False
            self._drop(entry)
            return True

    def pin(self, path: Path) -> None:
        """Never evict or expire this model (hot tasks); it need not be loaded yet."""
        with self._lock:
            self._pins.add(_key(path))
            if (entry := self._entries.get(_key(path))) is not None:
                entry.pinned = True

    def unpin(self, path: Path) -> None:
        with self._lock:
            self._pins.discard(_key(path))
            if (entry := self._entries.get(_key(path))) is not None:
                entry.pinned = False

    def expire(self) -> int:
        """Unload what has not been used for keep_alive seconds; returns how many went."""
        with self._lock:
            now = self.clock()
            stale = [
                e
                for e in self._entries.values()
                if not e.pinned and now - e.last_used > self.keep_alive
            ]
            gone = 0
            for entry in stale:
                if entry.key in self._entries:
                    gone += len(self._drop(entry))
            self.stats.expirations += gone
            return gone

    def close(self) -> None:
        with self._lock:
            for entry in [e for e in self._entries.values() if e.kind == BASE]:
                self._drop(entry)
            for entry in list(self._entries.values()):
                self._drop(entry)

    @property
    def used(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def describe(self) -> dict[str, Any]:
        """What is resident and how the cache has fared (the worker's `stats` request)."""
        with self._lock:
            now = self.clock()
            swaps = sorted(self.stats.swap_ms)
            return {
                "budget_mb": round(self.budget / 1e6, 1),
                "used_mb": round(self.used / 1e6, 1),
                "loads": self.stats.loads,
                "hits": self.stats.hits,
                "evictions": self.stats.evictions,
                "expirations": self.stats.expirations,
                "swaps": self.stats.swaps,
                "swap_ms_p50": round(swaps[len(swaps) // 2], 2) if swaps else None,
                "models": [e.describe(now) for e in self._entries.values()],
            }

    # -- internals ------------------------------------------------------------------------

    def _get(self, path: Path | None, kind: str, base: str | None = None) -> Entry:
        if path is None:
            raise ModelError(f"no {kind} model given")
        key = _key(path)
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.kind != kind:
                raise ModelError(f"{path} is loaded as a {entry.kind}, not as a {kind}")
            entry.hits += 1
            entry.last_used = now
            self.stats.hits += 1
            if entry.base is not None:
                self._entries[entry.base].last_used = now
            return entry
        size = _size(path, kind)
        self._make_room(size, keep={base})
        started = time.perf_counter()
        if kind == ADAPTER:
            assert base is not None
            handle = _load_adapter(self._entries[base].handle, path)
        else:
            handle = _load_llama(path, kind, self.threads)
            size += _context_bytes(handle) if kind == BASE else 0
        load_ms = (time.perf_counter() - started) * 1000
        entry = Entry(key, kind, path, handle, size, load_ms, now, now, base, 0, key in self._pins)
        self._entries[key] = entry
        self._make_room(0, keep={key, base})  # its context made it larger than its file
        self.stats.loads += 1
        log.info("loaded %s %s in %.0f ms (%.1f MB)", kind, path.name, load_ms, size / 1e6)
        if self.used > self.budget:
            log.warning(
                "models need %.0f MB, over the %.0f MB budget: pinned or in use",
                self.used / 1e6,
                self.budget / 1e6,
            )
        return entry

    def _make_room(self, size: int, keep: set[str | None]) -> None:
        """Evict least recently used unpinned models until `size` more fits."""
        while self.used + size > self.budget:
            # A base takes its adapters with it; `keep`: the model loading and its base.
            victims = [e for e in self._entries.values() if not e.pinned and e.key not in keep]
            if not victims:
                return
            victim = min(victims, key=lambda e: e.last_used)
            self.stats.evictions += len(self._drop(victim))

    def _drop(self, entry: Entry) -> list[Entry]:
        """Free a model; a base's adapters go first (they live on its model)."""
        dropped = []
        if entry.kind == BASE:
            for child in [e for e in self._entries.values() if e.base == entry.key]:
                dropped += self._drop(child)
        if entry.kind == ADAPTER:
            assert entry.base is not None
            base = self._entries.get(entry.base)
            if base is not None and self._active.get(base.key) == entry.key:
                self._set_adapter(base, None)
            _free_adapter(entry.handle)
        else:
            self._active.pop(entry.key, None)
            entry.handle.close()
        del self._entries[entry.key]
        log.info("unloaded %s %s", entry.kind, entry.path.name)
        return [*dropped, entry]

    def _set_adapter(self, base: Entry, adapter: Entry | None) -> None:
        """Swap the adapter on the base's context; the KV cache then holds stale keys."""
        current = self._active.get(base.key)
        wanted = adapter.key if adapter else None
        if current == wanted:
            return
        import llama_cpp

        started = time.perf_counter()
        llm = base.handle
        if adapter is None:
            failed = llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None)
        else:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter.handle)
            scales = (ctypes.c_float * 1)(1.0)
            failed = llama_cpp.llama_set_adapters_lora(llm.ctx, adapters, 1, scales)
        if failed:
            raise ModelError(f"llama.cpp could not set the adapter on {base.path.name}")
        llm.reset()  # the cached prompt was computed with the other adapter
        self._active[base.key] = wanted
        self.stats.swaps += 1
        self.stats.swap_ms.append((time.perf_counter() - started) * 1000)
        del self.stats.swap_ms[:-1000]


def _key(path: Path) -> str:
    return str(Path(path).resolve())


def _size(path: Path, kind: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the {kind} model ({exc.strerror})") from exc


def default_threads(kind: str) -> int:
    """llama.cpp's threads busy-wait at every step: on cores shared with other work, two
    threads can be 10-20x slower than one. The encoder (a few ms a sentence) gets one; a
    generative base half the cores."""
    return 1 if kind == ENCODER else max(1, (os.cpu_count() or 2) // 2)


def _load_llama(path: Path, kind: str, threads: int | None) -> Any:
    import llama_cpp

    threads = threads or default_threads(kind)
    try:
        if kind == ENCODER:
            from stillroom.service.embedding import open_encoder

            return open_encoder(path, threads)
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=BASE_CONTEXT,
            n_batch=512,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: llama.cpp cannot load it ({exc})") from exc


def _load_adapter(llm: Any, path: Path) -> Any:
    import llama_cpp

    handle = llama_cpp.llama_adapter_lora_init(llm.model, str(path).encode())
    if not handle:
        raise ModelError(f"{path}: llama.cpp cannot load this LoRA adapter onto its base")
    return handle


def _free_adapter(handle: Any) -> None:
    import llama_cpp

    llama_cpp.llama_adapter_lora_free(handle)


def _context_bytes(llm: Any) -> int:
    """The KV cache llama.cpp allocates for the context (f16 keys and values)."""
    meta = llm.metadata
    arch = meta.get("general.architecture", "llama")
    layers = int(meta.get(f"{arch}.block_count", 0))
    width = int(meta.get(f"{arch}.embedding_length", 0))
    heads = int(meta.get(f"{arch}.attention.head_count", 1)) or 1
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
    per_token = 2 * layers * (width // heads) * kv_heads * 2
    return int(llm.n_ctx()) * per_token
