"""Filesystem steps shared by the actions: identity, hashing, durable copies, link placement."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from stillroom.errors import ActionError
from stillroom.service.hooks.actions.base import Journal, short
from stillroom.service.hooks.naming import MAX_TRIES, free_name, is_temp

CHUNK = 1 << 20


def identity(path: str | Path) -> list[int] | None:
    """[device, inode] of the file itself (never a link's target), or None when absent."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return [st.st_dev, st.st_ino]


def exists(path: str | Path) -> bool:
    return os.path.lexists(path)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Both names stand for one inode (a hard link)."""
    ia, ib = identity(a), identity(b)
    return ia is not None and ia == ib


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_or_none(path: str | Path) -> str | None:
    try:
        return sha256(path)
    except FileNotFoundError:
        return None


def regular_file(path: str | Path) -> Path:
    """The absolute path of an existing regular file (not a link, not one of our temps)."""
    src = Path(os.path.abspath(path))
    try:
        st = os.stat(src, follow_symlinks=False)
    except FileNotFoundError:
        raise ActionError(f"{short(src)} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise ActionError(f"{short(src)} is not a regular file")
    if is_temp(src.name):
        raise ActionError(f"{short(src)} is one of stillroom's temp files")
    return src


def source_facts(path: Path, *, digest: bool = True) -> dict[str, Any]:
    """What identifies a file before we act on it: inode, size, time and (optionally) sha256."""
    st = os.stat(regular_file(path), follow_symlinks=False)
    facts: dict[str, Any] = {
        "src_id": [st.st_dev, st.st_ino],
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }
    if digest:
        facts["sha256"] = sha256(path)
    return facts


def write_new(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create `path` (it must not exist), fill it, and fsync it before returning."""
    with open(path, "xb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def copy_new(src: Path, dst: Path) -> str:
    """Copy src's bytes into a new file dst (fsynced, with src's mode and times); its sha256."""
    digest = hashlib.sha256()

    def write(out: BinaryIO) -> None:
        with open(src, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)

    write_new(dst, write)
    shutil.copystat(src, dst)
    return digest.hexdigest()


def link_free(journal: Journal, src: Path, key: str, want: str) -> Path:
    """Hard-link src at journal.plan[key], or at the next free name if that is taken.

    A link never replaces anything, so a name taken in a race fails with EEXIST; the new
    name is journaled before the next try.
    """
    dst = Path(journal.plan[key])
    for _ in range(MAX_TRIES):
        journal.touch(dst)
        try:
            os.link(src, dst, follow_symlinks=False)
            return dst
        except FileExistsError:
            dst = free_name(dst.parent, want)
            journal.update(**{key: str(dst)})
    raise ActionError(f"no free name for {want!r} in {dst.parent}")


def missing_dirs(folder: Path) -> list[str]:
    """The folders (outermost first) that creating `folder` would make."""
    missing: list[str] = []
    while not exists(folder):
        missing.append(str(folder))
        if folder.parent == folder:
            break
        folder = folder.parent
    return list(reversed(missing))


def make_dirs(folders: list[str]) -> None:
    for folder in folders:
        try:
            os.mkdir(folder)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise ActionError(f"{folder} exists and is not a folder") from None


def remove_empty_dirs(journal: Journal, folders: list[str]) -> None:
    """Remove folders we made, innermost first, and only while they are empty."""
    for folder in reversed(folders):
        journal.touch(folder)
        try:
            os.rmdir(folder)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                return
            raise


def remove_temp(journal: Journal, path: str | None) -> None:
    """Remove one of our own temp files, if it is there."""
    if path and exists(path):
        journal.touch(path)
        os.unlink(path)
