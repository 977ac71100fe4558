"""File features from real files: type, identity, quick hash and snippet, never an exception."""

from __future__ import annotations

import builtins
import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stillroom.monitors.features import (
    CHUNK,
    PDF_MAX_BYTES,
    file_features,
    open_regular,
    quick_hash,
)

SECRET = "the launch code is 0000-SWORDFISH"
OPENAI_KEY = "sk-" + "A1b2C3d4E5" * 4  # 40 characters after sk-


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


def test_a_symlink_is_described_as_itself_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    folder = tmp_path / "private"
    folder.mkdir()
    links = {
        "notes.txt": secret,  # to a file
        "Photos": folder,  # to a folder
        "gone.pdf": tmp_path / "never-was.pdf",  # dangling
    }
    for name, target in links.items():
        (tmp_path / name).symlink_to(target)
    for name in links:
        link = tmp_path / name
        features = file_features(link)
        st = os.lstat(link)
        assert features is not None, name
        assert features.symlink and features.name == name
        assert features.extension == os.path.splitext(name)[1].lstrip(".").lower()
        assert (features.snippet, features.quick_hash) == (None, None)
        assert features.mime == "inode/symlink"  # nothing sniffed from the target
        assert (features.size, features.inode, features.device) == (
            st.st_size,
            st.st_ino,
            st.st_dev,
        )
        assert quick_hash(link) is None
    regular = file_features(secret)
    assert regular is not None and not regular.symlink


def test_open_refuses_a_path_swapped_after_lstat(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    path = tmp_path / "notes.txt"
    path.write_text("harmless")
    seen = os.lstat(path)
    os.link(path, tmp_path / "kept")  # its inode number stays taken: no reuse by chance
    # Swapped for a link between the lstat and the open: O_NOFOLLOW refuses it.
    path.unlink()
    path.symlink_to(secret)
    with pytest.raises(OSError) as refused:
        open_regular(path, seen)
    assert refused.value.errno == errno.ELOOP
    # Swapped for another regular file: fstat's (device, inode) differs from the lstat's.
    other = tmp_path / "other.txt"
    other.write_text(SECRET)
    other.replace(path)
    with pytest.raises(OSError) as refused:
        open_regular(path, seen)
    assert refused.value.errno == errno.ESTALE
    with open_regular(path, os.lstat(path)) as fh:  # the file lstat saw opens
        assert fh.read() == SECRET.encode()


@pytest.mark.parametrize("within_root", [False, True])
@pytest.mark.parametrize("replacement", ["link", "file"])
def test_features_of_a_file_swapped_during_the_read_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replacement: str, within_root: bool
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    path = downloads / "notes.txt"
    path.write_text("harmless")
    os.link(path, tmp_path / "kept")  # its inode number stays taken: no reuse by chance
    other = tmp_path / "other.txt"
    other.write_text(SECRET)
    swapped: list[str] = []

    def then_swap(check: Callable[..., os.stat_result]) -> Callable[..., os.stat_result]:
        def checked(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            """The real check, then the attacker's move: the path now names something else."""
            st = check(target, *args, **kwargs)
            if os.fsdecode(target).endswith("notes.txt") and not swapped:
                swapped.append(check.__name__)
                if replacement == "link":
                    path.unlink()
                    path.symlink_to(secret)
                else:
                    other.replace(path)
            return st

        return checked

    with monkeypatch.context() as patch:
        # Whichever check comes first (lstat, or a stat that follows links) is raced.
        patch.setattr(os, "lstat", then_swap(os.lstat))
        patch.setattr(os, "stat", then_swap(os.stat))
        features = file_features(path, root=downloads if within_root else None)
    assert swapped, "the race never ran"
    assert features is None
    assert path.is_symlink() == (replacement == "link")  # the swap did happen


def test_a_linked_folder_on_the_way_below_the_root_is_not_followed(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.txt").write_text(SECRET)
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    (downloads / "sub").symlink_to(private)
    path = downloads / "sub" / "secret.txt"
    assert file_features(path, root=downloads) is None
    assert quick_hash(path, root=downloads) is None
    (downloads / "real").mkdir()
    (downloads / "real" / "ok.txt").write_text("fine")
    features = file_features(downloads / "real" / "ok.txt", root=downloads)
    assert features is not None and features.snippet == "fine"
    assert quick_hash(downloads / "real" / "ok.txt", root=downloads) == features.quick_hash


def test_pdf_text_comes_from_the_checked_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pdf_bytes: Callable[[str], bytes]
) -> None:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(pdf_bytes("Invoice 42 from ACME"))
    opened: list[tuple[str, int | str]] = []
    real_open, real_builtin_open = os.open, builtins.open

    def os_open(target: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        opened.append((os.fsdecode(target), flags))
        return real_open(target, flags, *args, **kwargs)

    def builtin_open(target: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append((str(target), "open()"))
        return real_builtin_open(target, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", os_open)
        patch.setattr(builtins, "open", builtin_open)
        features = file_features(path)
    assert features is not None and features.snippet == "Invoice 42 from ACME"
    of_pdf = [how for target, how in opened if target.endswith("invoice.pdf")]
    assert len(of_pdf) == 1 and isinstance(of_pdf[0], int) and of_pdf[0] & os.O_NOFOLLOW


def test_text_snippets_are_redacted(tmp_path: Path) -> None:
    path = tmp_path / "deploy-notes.txt"
    path.write_text(f"export OPENAI_API_KEY={OPENAI_KEY}\nlogin with password=hunter2xyz\n")
    features = file_features(path)
    assert features is not None and features.snippet is not None
    assert OPENAI_KEY not in features.snippet and "hunter2xyz" not in features.snippet
    assert "[REDACTED:" in features.snippet and "login with password=" in features.snippet
    # A key cut by the snippet's end is still recognised whole: no piece of it is kept.
    cut = tmp_path / "cut.txt"
    cut.write_text("a" * 390 + " " + OPENAI_KEY)
    features = file_features(cut, snippet_chars=400)
    assert features is not None and features.snippet is not None
    assert len(features.snippet) == 400 and OPENAI_KEY[3:9] not in features.snippet


def test_pdf_snippets_are_redacted(tmp_path: Path, pdf_bytes: Callable[[str], bytes]) -> None:
    path = tmp_path / "handover.pdf"
    path.write_bytes(pdf_bytes(f"key {OPENAI_KEY} password=hunter2xyz"))
    features = file_features(path)
    assert features is not None and features.snippet is not None
    assert OPENAI_KEY not in features.snippet and "hunter2xyz" not in features.snippet
    assert features.snippet.startswith("key [REDACTED:openai-key]")
