"""What a file is, cheaply: name, type, size, identity, a quick hash and the start of its text.

Nothing here follows a symbolic link: a link is described as itself (`symlink=True`), and a
regular file's bytes come only from a descriptor opened without following links and checked
to be the very file that lstat saw, so a file swapped for a link in between is never read.
Given the root it lies in, the way down to the file follows no link either.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import logging
import mimetypes
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import filetype

from stillroom.events import FileFeatures
from stillroom.redact import redact_text

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
SNIFF_BYTES = 4096
PDF_MAX_BYTES = 20 * 1024 * 1024
OCTET_STREAM = "application/octet-stream"
PDF = "application/pdf"
SYMLINK = "inode/symlink"  # shared-mime-info's type for a link: nothing claims what it points at
# Redaction sees this much text past the snippet's end, so a secret cut by the end is still
# recognised whole (the longest fixed-shape secret is under 100 characters).
REDACT_MARGIN = 200
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEXT_SUBTYPES = frozenset({"json", "xml", "yaml", "x-yaml", "javascript", "x-sh", "toml", "sql"})


def file_features(
    path: Path, snippet_chars: int = 400, root: Path | None = None
) -> FileFeatures | None:
    """Describe one regular file or symbolic link; None when it vanished, is something else, or
    was replaced while being read. A link's target is never read; with `root` (a folder the path
    lies in), no link on the way down from it is followed either."""
    try:
        with folder_fd(path, root) as dir_fd:
            return _describe(path, dir_fd, snippet_chars)
    except OSError as exc:  # the way to it is gone, or is a link now
        logger.debug("not reading %s: %s", path, exc)
        return None


def _describe(path: Path, dir_fd: int | None, snippet_chars: int) -> FileFeatures | None:
    st = os.lstat(path if dir_fd is None else path.name, dir_fd=dir_fd)
    if stat.S_ISLNK(st.st_mode):
        return link_features(path.name, st)
    if not stat.S_ISREG(st.st_mode):
        return None
    digest: str | None = None
    snippet: str | None = None
    try:
        with open_regular(path, st, dir_fd) as fh:
            st = os.fstat(fh.fileno())
            head = fh.read(CHUNK)
            digest = _digest(fh, head, st.st_size)
            mime, known = guess_mime(path.name, head)
            if snippet_chars > 0:
                snippet = _snippet(fh, path, mime, known, head, st.st_size, snippet_chars)
    except PermissionError as exc:  # unreadable: described by name and size alone
        logger.debug("cannot read %s: %s", path, exc)
        mime = guess_mime(path.name, None)[0]
    return FileFeatures(
        name=path.name,
        extension=extension_of(path.name),
        mime=mime,
        size=st.st_size,
        snippet=snippet,
        inode=st.st_ino,
        device=st.st_dev,
        quick_hash=digest,
    )


def link_features(name: str, st: os.stat_result) -> FileFeatures:
    """A symbolic link as itself (its lstat): name and extension, no content, no hash."""
    return FileFeatures(
        name=name,
        extension=extension_of(name),
        mime=SYMLINK,
        size=st.st_size,
        inode=st.st_ino,
        device=st.st_dev,
        symlink=True,
    )


def open_regular(path: Path, expected: os.stat_result, dir_fd: int | None = None) -> BinaryIO:
    """Open the regular file that lstat saw as `expected`, never through a link: O_NOFOLLOW,
    then fstat must show a regular file with the same (device, inode). Raises OSError (ELOOP
    for a link, ESTALE for another file) when the path was swapped in between. With `dir_fd`,
    the file's name is opened in that folder."""
    fd = os.open(path if dir_fd is None else path.name, OPEN_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        same = (st.st_dev, st.st_ino) == (expected.st_dev, expected.st_ino)
        if not (stat.S_ISREG(st.st_mode) and same):
            raise OSError(errno.ESTALE, "replaced by another file while being opened", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def folder_fd(path: Path, root: Path | None) -> Iterator[int | None]:
    """A descriptor of the path's folder, opened from `root` down one folder at a time without
    following a link (raises OSError where one is); None without a root."""
    if root is None:
        yield None
        return
    parts = path.parent.relative_to(root).parts  # ValueError: not inside the root
    fd = os.open(root, FOLDER_FLAGS)
    try:
        for part in parts:
            fd, parent = os.open(part, FOLDER_FLAGS, dir_fd=fd), fd
            os.close(parent)
        yield fd
    finally:
        os.close(fd)


def _snippet(
    fh: BinaryIO, path: Path, mime: str, known: bool, head: bytes, size: int, chars: int
) -> str | None:
    if mime == PDF:
        # The header check keeps pypdf (and its warnings) away from files that are not PDFs.
        looks_right = b"%PDF-" in head[:1024] and size < PDF_MAX_BYTES
        return pdf_snippet(fh, chars, path.name) if looks_right else None
    if is_text(mime, known, head):
        return text_snippet(head, chars)
    return None


def basic_features(
    name: str,
    size: int,
    inode: int | None,
    device: int | None,
    quick_hash: str | None,
    symlink: bool = False,
) -> FileFeatures:
    """Features known without reading the file (for one that is gone): the type is by name."""
    mime = SYMLINK if symlink else mimetypes.guess_type(name, strict=False)[0] or OCTET_STREAM
    return FileFeatures(
        name=name,
        extension=extension_of(name),
        mime=mime,
        size=size,
        inode=inode,
        device=device,
        quick_hash=None if symlink else quick_hash,
        symlink=symlink,
    )


def extension_of(name: str) -> str:
    """Lower case, without the dot; '' for none (a leading-dot name has no extension)."""
    return os.path.splitext(name)[1].lstrip(".").lower()


def guess_mime(name: str, head: bytes | None) -> tuple[str, bool]:
    """The MIME type by name, else by content; the flag says whether either knew it."""
    mime = mimetypes.guess_type(name, strict=False)[0]
    if mime is None and head:
        kind = filetype.guess(head)
        mime = kind.mime if kind is not None else None
    return (mime, True) if mime else (OCTET_STREAM, False)


def is_text(mime: str, known: bool, head: bytes) -> bool:
    """Text by type, or for an unknown type by the absence of NUL bytes in its first 4 KiB."""
    if not known:
        return b"\0" not in head[:SNIFF_BYTES]
    major, _, minor = mime.partition("/")
    return major == "text" or minor in _TEXT_SUBTYPES or minor.endswith(("+json", "+xml"))


def text_snippet(head: bytes, chars: int) -> str:
    """The first `chars` characters of UTF-8 text, secrets redacted; bad bytes become U+FFFD."""
    # final=False: a character cut by the read boundary is dropped, not replaced.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return redacted(decoder.decode(head[: (chars + REDACT_MARGIN) * 4], final=False), chars)


def pdf_snippet(stream: BinaryIO, chars: int, name: str = "PDF") -> str | None:
    """The first page's text through pypdf, secrets redacted; None for a PDF it cannot read.
    It reads the stream it is given (the descriptor already checked), never a path."""
    from pypdf import PdfReader

    try:
        stream.seek(0)
        reader = PdfReader(stream)
        text = reader.pages[0].extract_text() if reader.pages else ""
    except Exception as exc:  # pypdf raises many unrelated types on malformed files
        logger.debug("no text from %s: %s", name, exc)
        return None
    return redacted(" ".join(text.split()), chars) or None


def redacted(text: str, chars: int) -> str:
    """The first `chars` characters after redaction, which sees a margin beyond them."""
    return redact_text(text[: chars + REDACT_MARGIN])[:chars]


def quick_hash(path: Path, root: Path | None = None) -> str | None:
    """sha256 of size + first and last 64 KiB of a regular file; None when unreadable or not
    a regular file (no link is followed: see file_features for `root`)."""
    try:
        with folder_fd(path, root) as dir_fd:
            st = os.lstat(path if dir_fd is None else path.name, dir_fd=dir_fd)
            with open_regular(path, st, dir_fd) as fh:
                size = os.fstat(fh.fileno()).st_size
                return _digest(fh, fh.read(CHUNK), size)
    except OSError:
        return None


def _digest(fh: BinaryIO, head: bytes, size: int) -> str:
    digest = hashlib.sha256(size.to_bytes(8, "little"))
    digest.update(head)
    if size > CHUNK:
        fh.seek(max(CHUNK, size - CHUNK))
        digest.update(fh.read(CHUNK))
    return digest.hexdigest()
