"""File features from real files: type, identity, quick hash and snippet, never an exception."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from stillroom.monitors.features import CHUNK, PDF_MAX_BYTES, file_features, quick_hash


def expected_hash(data: bytes) -> str:
    digest = hashlib.sha256(len(data).to_bytes(8, "little"))
    digest.update(data[:CHUNK])
    if len(data) > CHUNK:
        digest.update(data[max(CHUNK, len(data) - CHUNK) :])
    return digest.hexdigest()


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "Notes.TXT"
    text = "Dear reader,\n" + "all work and no play " * 40
    path.write_text(text, encoding="utf-8")
    features = file_features(path, snippet_chars=50)
    assert features is not None
    st = path.stat()
    assert (features.name, features.extension, features.mime) == ("Notes.TXT", "txt", "text/plain")
    assert (features.size, features.inode, features.device) == (st.st_size, st.st_ino, st.st_dev)
    assert features.snippet == text[:50]
    assert features.quick_hash == expected_hash(path.read_bytes()) == quick_hash(path)


def test_snippet_counts_characters_and_replaces_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_bytes("é€😀".encode() * 10 + b"\xff\xfe tail")
    features = file_features(path, snippet_chars=4)
    assert features is not None and features.snippet == "é€😀é"
    features = file_features(path, snippet_chars=400)
    assert features is not None and features.snippet is not None
    assert features.snippet.endswith("\ufffd\ufffd tail")


def test_json_and_typeless_text_get_snippets(tmp_path: Path) -> None:
    data = tmp_path / "people.json"
    data.write_text('{"first": "Ada"}')
    typeless = tmp_path / "README"
    typeless.write_text("plain words, no extension")
    json_features = file_features(data)
    typeless_features = file_features(typeless)
    assert json_features is not None and typeless_features is not None
    assert (json_features.mime, json_features.snippet) == ("application/json", '{"first": "Ada"}')
    assert typeless_features.mime == "application/octet-stream"
    assert typeless_features.extension == ""
    assert typeless_features.snippet == "plain words, no extension"


def test_binary_content_is_sniffed_and_has_no_snippet(tmp_path: Path) -> None:
    png = tmp_path / "picture"  # no extension: the content says PNG
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    blob = tmp_path / "blob"
    blob.write_bytes(b"abc\0def" * 100)
    png_features = file_features(png)
    blob_features = file_features(blob)
    assert png_features is not None and blob_features is not None
    assert (png_features.mime, png_features.snippet) == ("image/png", None)
    assert (blob_features.mime, blob_features.snippet) == ("application/octet-stream", None)


def test_pdf_first_page_text(tmp_path: Path, pdf_bytes: Callable[[str], bytes]) -> None:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(pdf_bytes("Invoice 42 from ACME"))
    features = file_features(path)
    assert features is not None
    assert (features.mime, features.extension) == ("application/pdf", "pdf")
    assert features.snippet == "Invoice 42 from ACME"


def test_corrupt_and_huge_pdfs_have_no_snippet(
    tmp_path: Path, pdf_bytes: Callable[[str], bytes]
) -> None:
    corrupt = tmp_path / "corrupt.pdf"
    corrupt.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> garbage")
    not_pdf = tmp_path / "fake.pdf"
    not_pdf.write_bytes(b"MZ\x90\0 not a pdf at all")
    huge = tmp_path / "huge.pdf"
    huge.write_bytes(pdf_bytes("too big to read"))
    os.truncate(huge, PDF_MAX_BYTES + 1)  # sparse: cheap to make
    for path in (corrupt, not_pdf, huge):
        features = file_features(path)
        assert features is not None and features.snippet is None, path.name
    huge_features = file_features(huge)
    assert huge_features is not None and huge_features.size == PDF_MAX_BYTES + 1


def test_quick_hash_reads_only_head_and_tail(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = bytearray(os.urandom(5 * CHUNK))
    path.write_bytes(bytes(data))
    original = quick_hash(path)
    data[2 * CHUNK] ^= 0xFF  # the middle is not read
    path.write_bytes(bytes(data))
    assert quick_hash(path) == original == expected_hash(bytes(data))
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert quick_hash(path) != original


def test_gone_or_not_a_file_is_none(tmp_path: Path) -> None:
    assert file_features(tmp_path / "never-was.txt") is None
    assert file_features(tmp_path) is None
    assert quick_hash(tmp_path / "never-was.txt") is None


def test_no_snippet_when_zero_chars(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("hello")
    features = file_features(path, snippet_chars=0)
    assert features is not None and features.snippet is None and features.size == 5
