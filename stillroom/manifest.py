"""A model version's folder: its files with sha256, base model, metrics and guarantee."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from stillroom.errors import ModelError
from stillroom.paths import PRIVATE_FILE

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    """Record every file of the folder (but the manifest) with its size and sha256."""
    files = {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"files": files, "written": time.time(), **fields}
    target = folder / MANIFEST
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.chmod(target, PRIVATE_FILE)
    return manifest


def read_manifest(folder: Path, verify: bool = True) -> dict[str, Any]:
    """The manifest, after checking each listed file is there with the recorded sha256."""
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: no readable {MANIFEST} ({exc})") from exc
    if verify:
        for name, info in manifest.get("files", {}).items():
            path = folder / name
            if not path.is_file():
                raise ModelError(f"{folder}: {name} is missing")
            if sha256_file(path) != info["sha256"]:
                raise ModelError(f"{folder}: {name} changed since it was trained")
    return manifest
