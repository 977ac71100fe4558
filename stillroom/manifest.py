"""A model version's folder: its files with sha256, base model, metrics and guarantee."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path, PurePosixPath
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
    """Record every file of the folder and its subfolders (but the manifest) by relative
    path, with its size and sha256."""
    files = {
        p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p != folder / MANIFEST
    }
    manifest = {"files": files, "written": time.time(), **fields}
    target = folder / MANIFEST
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.chmod(target, PRIVATE_FILE)
    return manifest


def read_manifest(folder: Path, verify: bool = True) -> dict[str, Any]:
    """The manifest, after checking each listed file is there with the recorded sha256, and
    that no subfolder holding listed files (an own encoder) has gained unlisted ones."""
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: no readable {MANIFEST} ({exc})") from exc
    if verify:
        listed = manifest.get("files", {})
        for name, info in listed.items():
            parts = PurePosixPath(name).parts
            if not parts or name.startswith("/") or ".." in parts:
                raise ModelError(f"{folder}: {MANIFEST} lists a path outside the folder: {name}")
            path = folder / name
            if not path.is_file():
                raise ModelError(f"{folder}: {name} is missing")
            if sha256_file(path) != info["sha256"]:
                raise ModelError(f"{folder}: {name} changed since it was trained")
        # A file slipped into a model folder could change what loads (a tokenizer's added
        # tokens, weights in another format), so subfolders must hold exactly what was listed.
        subfolders = {PurePosixPath(name).parts[0] for name in listed if "/" in name}
        for sub in sorted(subfolders):
            for path in sorted((folder / sub).rglob("*")):
                name = path.relative_to(folder).as_posix()
                if path.is_file() and name not in listed:
                    raise ModelError(f"{folder}: {name} was not part of this version")
    return manifest
