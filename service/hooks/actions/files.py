"""Filesystem steps shared by the actions: identity, hashing, durable copies, link placement.

Sources are read from descriptors opened without following a link and checked against the
journaled (device, inode); links, renames and removals go through descriptors of the folders
themselves, so a name swapped for a link between the check and the act is never followed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from stillroom.errors import ActionError
from stillroom.service.hooks.actions.base import Journal, short
from stillroom.service.hooks.naming import MAX_TRIES, free_name, is_temp

CHUNK = 1 << 20
# O_NONBLOCK: a FIFO swapped in for the file must not hang the open; fstat then refuses it.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

T = TypeVar("T")


def identity(path: str | Path) -> list[int] | None:
    """[device, inode] of the file itself (never a link's target), or None when absent."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return [st.st_dev, st.st_ino]


def identity_at(folder: int, name: str) -> list[int] | None:
    """identity() of `name` inside the folder open as descriptor `folder`."""
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return [st.st_dev, st.st_ino]


def exists(path: str | Path) -> bool:
    return os.path.lexists(path)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Both names stand for one inode (a hard link)."""
    ia, ib = identity(a), identity(b)
    return ia is not None and ia == ib


def open_regular(
    path: str | Path, *, folder: int | None = None, expect: Sequence[int] | None = None
) -> int:
    """A read descriptor of a regular file, opened without following a link; with `expect`,
    only if it is that (device, inode). ActionError otherwise; FileNotFoundError if absent."""
    try:
        fd = os.open(path, READ_FLAGS, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ActionError(f"{short(path)} is a symbolic link; left alone") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ActionError(f"{short(path)} is not a regular file")
        if expect is not None and [st.st_dev, st.st_ino] != list(expect):
            raise ActionError(f"{short(path)} was replaced since stillroom checked it")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def reading(
    path: str | Path, *, folder: int | None = None, expect: Sequence[int] | None = None
) -> Iterator[BinaryIO]:
    """open_regular() as a file object."""
    with os.fdopen(open_regular(path, folder=folder, expect=expect), "rb") as fh:
        yield fh


@contextmanager
def folder_fd(folder: str | Path) -> Iterator[int]:
    """A descriptor of the folder itself (its last part never a link): names resolved
    through it cannot be redirected elsewhere by a folder swapped for a link meanwhile."""
    try:
        fd = os.open(folder, FOLDER_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ActionError(
                f"{short(folder)} is a symbolic link or not a folder; stillroom acts only"
                " in real folders"
            ) from None
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def _digest(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256(path: str | Path, *, folder: int | None = None) -> str:
    with reading(path, folder=folder) as fh:
        return _digest(fh)


def sha256_or_none(path: str | Path, *, folder: int | None = None) -> str | None:
    """sha256 of a regular file; None when it is absent, a link or not a regular file."""
    try:
        return sha256(path, folder=folder)
    except (FileNotFoundError, ActionError):
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


def source_facts(
    path: Path, *, digest: bool = True, expect: Sequence[int] | None = None
) -> dict[str, Any]:
    """What identifies a file before we act on it: inode, size, time and (optionally) sha256,
    all read through one descriptor; with `expect`, the file must still be that inode."""
    src = regular_file(path)
    try:
        fd = open_regular(src, expect=expect)
    except FileNotFoundError:
        raise ActionError(f"{short(src)} does not exist") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        facts: dict[str, Any] = {
            "src_id": [st.st_dev, st.st_ino],
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }
        if digest:
            facts["sha256"] = _digest(fh)
    return facts


def check_source(folder: int, name: str, expect: Sequence[int], shown: str | Path) -> None:
    """The name in the folder is still the journaled regular file; ActionError if not."""
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        raise ActionError(f"{short(shown)} does not exist any more") from None
    if not stat.S_ISREG(st.st_mode) or [st.st_dev, st.st_ino] != list(expect):
        raise ActionError(f"{short(shown)} was replaced since stillroom checked it")


def write_new(
    journal: Journal, key: str, folder: int, name: str, fill: Callable[[BinaryIO], T]
) -> T:
    """Create `name` in the folder (it must not exist), journal its identity under `key`
    before anything is written into it, fill it and fsync it; fill's result."""
    fd = os.open(name, NEW_FLAGS, 0o666, dir_fd=folder)
    with os.fdopen(fd, "wb") as out:
        st = os.fstat(fd)
        journal.update(**{key: [st.st_dev, st.st_ino]})
        result = fill(out)
        out.flush()
        os.fsync(fd)
    return result


def copy_from(src: BinaryIO, out: BinaryIO) -> str:
    """Copy src's bytes, mode, times and extended attributes into out; the sha256."""
    digest = hashlib.sha256()
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        out.write(chunk)
    out.flush()
    st = os.fstat(src.fileno())
    _copy_xattrs(src.fileno(), out.fileno())
    os.fchmod(out.fileno(), stat.S_IMODE(st.st_mode))
    os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
    return digest.hexdigest()


def _copy_xattrs(src: int, dst: int) -> None:
    """Extended attributes (a browser's "where from", say), where the filesystems keep them."""
    if not hasattr(os, "listxattr"):
        return
    try:
        names = os.listxattr(src)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.ENODATA, errno.EPERM):
            return
        raise
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name))
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.ENODATA, errno.EPERM, errno.EACCES):
                raise


def link_free(journal: Journal, key: str, want: str, src: tuple[int, str], folder: int) -> Path:
    """Hard-link `src` (folder descriptor, name) at journal.plan[key] inside `folder`, or
    at the next free name if that is taken.

    A link never replaces anything, so a name taken in a race fails with EEXIST; the new
    name is journaled before the next try.
    """
    dst = Path(journal.plan[key])
    for _ in range(MAX_TRIES):
        journal.touch(dst)
        try:
            os.link(src[1], dst.name, src_dir_fd=src[0], dst_dir_fd=folder, follow_symlinks=False)
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
            if not os.path.isdir(folder) or os.path.islink(folder):
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


def remove_temp(journal: Journal, path: str | None, ident: Sequence[int] | None) -> None:
    """Remove one of our own temp files: only while it is the inode we journaled."""
    if not path or ident is None or identity(path) != list(ident):
        return
    folder, name = os.path.split(path)
    with folder_fd(folder) as fd:
        if identity_at(fd, name) == list(ident):
            journal.touch(path)
            os.unlink(name, dir_fd=fd)
