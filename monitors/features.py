"""What a file is, cheaply: name, type, size, identity, a quick hash and the start of its text."""

from __future__ import annotations

import codecs
import hashlib
import logging
import mimetypes
import os
import stat
from pathlib import Path
from typing import BinaryIO

import filetype

from stillroom.events import FileFeatures

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
SNIFF_BYTES = 4096
PDF_MAX_BYTES = 20 * 1024 * 1024
OCTET_STREAM = "application/octet-stream"
PDF = "application/pdf"
_TEXT_SUBTYPES = frozenset({"json", "xml", "yaml", "x-yaml", "javascript", "x-sh", "toml", "sql"})


def file_features(path: Path, snippet_chars: int = 400) -> FileFeatures | None:
    """Describe one regular file; None when it vanished or is not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    head: bytes | None = None
    digest: str | None = None
    try:
        with open(path, "rb") as fh:
            head = fh.read(CHUNK)
            digest = _digest(fh, head, st.st_size)
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.debug("cannot read %s: %s", path, exc)
    mime, known = guess_mime(path.name, head)
    snippet: str | None = None
    if snippet_chars > 0 and head is not None:
        if mime == PDF:
            # The header check keeps pypdf (and its warnings) away from files that are not PDFs.
            looks_right = b"%PDF-" in head[:1024] and st.st_size < PDF_MAX_BYTES
            snippet = pdf_snippet(path, snippet_chars) if looks_right else None
        elif is_text(mime, known, head):
            snippet = text_snippet(head, snippet_chars)
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


def basic_features(
    name: str, size: int, inode: int | None, device: int | None, quick_hash: str | None
) -> FileFeatures:
    """Features known without reading the file (for one that is gone): the type is by name."""
    mime = mimetypes.guess_type(name, strict=False)[0] or OCTET_STREAM
    return FileFeatures(
        name=name,
        extension=extension_of(name),
        mime=mime,
        size=size,
        inode=inode,
        device=device,
        quick_hash=quick_hash,
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
    """The first `chars` characters of UTF-8 text; bad bytes become U+FFFD."""
    # final=False: a character cut by the read boundary is dropped, not replaced.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return decoder.decode(head[: chars * 4], final=False)[:chars]


def pdf_snippet(path: Path, chars: int) -> str | None:
    """The first page's text through pypdf; None for a PDF it cannot read."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(path)
        text = reader.pages[0].extract_text() if reader.pages else ""
    except Exception as exc:  # pypdf raises many unrelated types on malformed files
        logger.debug("no text from %s: %s", path, exc)
        return None
    text = " ".join(text.split())
    return text[:chars] or None


def quick_hash(path: Path) -> str | None:
    """sha256 of size + first and last 64 KiB; None when unreadable."""
    try:
        with open(path, "rb") as fh:
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
