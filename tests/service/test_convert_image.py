"""convert_image on real images made by Pillow: the output, the original, the undo."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from factories import action
from PIL import Image

from stillroom.errors import ActionError, UndoError
from stillroom.service.hooks.executor import Executor

Snapshot = Callable[..., dict[str, bytes]]


def transparent_png(path: Path) -> Path:
    image = Image.new("RGBA", (32, 16), (200, 10, 10, 255))
    for x in range(16):
        for y in range(16):
            image.putpixel((x, y), (0, 0, 255, 0))  # fully transparent left half
    image.save(path)
    return path


def test_convert_png_with_alpha_to_jpeg_on_white(
    tree: Path, executor: Executor, snapshot: Snapshot, temps: Callable[..., Any]
) -> None:
    src = transparent_png(tree / "inbox" / "shot.png")
    before = snapshot(tree)
    plan = executor.plan(action(kind="convert_image", format="jpeg", quality=85), src)
    assert plan.describe() == f"convert {src} -> {tree / 'inbox' / 'shot.jpg'} (jpeg, quality 85)"
    record = executor.run(plan)
    assert record.state == "done", record.error
    out = tree / "inbox" / "shot.jpg"
    with Image.open(out) as jpeg:
        assert jpeg.format == "JPEG" and jpeg.mode == "RGB" and jpeg.size == (32, 16)
        left, right = jpeg.getpixel((4, 8)), jpeg.getpixel((28, 8))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    assert min(left) > 240  # transparent became white
    assert right[0] > 150 and right[2] < 80
    assert src.read_bytes() == before[str(src)]
    assert temps(tree) == []
    executor.undo(record.id)
    assert snapshot(tree) == before


def test_convert_into_a_folder_as_webp_numbered(
    tree: Path, executor: Executor, snapshot: Snapshot
) -> None:
    src = transparent_png(tree / "inbox" / "shot.png")
    (tree / "docs" / "shot.webp").write_bytes(b"not ours")
    config = action(kind="convert_image", format="webp", to=str(tree / "docs"))
    record = executor.run(executor.plan(config, src))
    assert record.plan["dst"] == str(tree / "docs" / "shot (1).webp")
    with Image.open(record.plan["dst"]) as webp:
        assert webp.format == "WEBP" and webp.mode == "RGBA"
    assert (tree / "docs" / "shot.webp").read_bytes() == b"not ours"


def test_undo_refuses_an_edited_conversion_and_keeps_it(tree: Path, executor: Executor) -> None:
    src = transparent_png(tree / "inbox" / "shot.png")
    record = executor.run(executor.plan(action(kind="convert_image"), src))
    out = Path(record.plan["dst"])
    with out.open("ab") as fh:
        fh.write(b"user edit")
    edited = out.read_bytes()
    with pytest.raises(UndoError, match="changed since stillroom wrote it"):
        executor.undo(record.id)
    assert out.read_bytes() == edited
    assert executor.store.action(record.id).state == "done"  # type: ignore[union-attr]


def test_convert_refuses_non_images_and_same_format(tree: Path, executor: Executor) -> None:
    with pytest.raises(ActionError, match="not an image"):
        executor.plan(action(kind="convert_image"), tree / "inbox" / "notes.txt")
    jpeg = tree / "inbox" / "photo.jpg"
    Image.new("RGB", (4, 4)).save(jpeg)
    with pytest.raises(ActionError, match="already JPEG"):
        executor.plan(action(kind="convert_image", format="jpeg"), jpeg)


def test_failed_conversion_leaves_no_trace(
    tree: Path, executor: Executor, snapshot: Snapshot, temps: Callable[..., Any]
) -> None:
    """A truncated PNG opens (the header is fine) but fails to decode mid-way."""
    good = transparent_png(tree / "inbox" / "big.png")
    Image.effect_noise((400, 400), 60).convert("RGB").save(good)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    before = snapshot(tree)
    record = executor.run(executor.plan(action(kind="convert_image"), good))
    assert record.state == "failed" and record.error
    assert snapshot(tree) == before and temps(tree) == []


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
    b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
)


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A 1-bit PNG of side x side pixels: a few tens of KB on disk, gigabytes as RGB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def ghostscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `gs` first on PATH that leaves a mark if anything ever runs it."""
    bin_dir, mark = tmp_path / "bin", tmp_path / "gs-ran"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\necho ran >> {mark}\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return mark


def test_eps_named_png_is_refused_and_ghostscript_never_runs(
    tree: Path, executor: Executor, snapshot: Snapshot, ghostscript: Path
) -> None:
    fake = tree / "inbox" / "cute-cat.png"
    fake.write_bytes(EPS)
    before = snapshot(tree)
    with pytest.raises(ActionError, match=r"not an image stillroom converts .*PostScript/EPS"):
        executor.plan(action(kind="convert_image"), fake)

    # The bytes change after the plan (same file, same inode): refused before any decoding.
    real = transparent_png(tree / "inbox" / "real.png")
    plan = executor.plan(action(kind="convert_image"), real)
    with real.open("r+b") as fh:
        fh.truncate(0)
        fh.write(EPS)
    record = executor.run(plan)
    assert record.state == "failed" and "PostScript/EPS" in (record.error or "")
    assert real.read_bytes() == EPS and fake.read_bytes() == EPS
    assert snapshot(tree) == {**before, str(real): EPS}
    assert not ghostscript.exists()


def test_the_worker_itself_refuses_what_is_not_allowed(tmp_path: Path, ghostscript: Path) -> None:
    """Even handed an EPS directly, the child never opens it (defence in depth)."""
    from stillroom.service.hooks.actions.convert_image import WORKER

    eps = tmp_path / "x.png"
    eps.write_bytes(EPS)
    with eps.open("rb") as src, (tmp_path / "out").open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-I", str(WORKER), "jpeg", "90", "50000000", "1024", "60"],
            stdin=src,
            stdout=out,
            stderr=subprocess.PIPE,
            check=False,
        )
    assert done.returncode == 3, done.stderr
    assert b"PostScript/EPS" in done.stderr
    assert (tmp_path / "out").read_bytes() == b"" and not ghostscript.exists()


def test_a_decompression_bomb_is_refused(
    tree: Path, executor: Executor, snapshot: Snapshot, temps: Callable[..., Any]
) -> None:
    bomb = bomb_png(tree / "inbox" / "wallpaper.png")
    assert bomb.stat().st_size < 200_000
    before = snapshot(tree)
    record = executor.run(executor.plan(action(kind="convert_image"), bomb))
    assert record.state == "failed"
    assert "decompression bomb" in (record.error or "")
    assert "max_megapixels is 50" in (record.error or "")
    assert snapshot(tree) == before and temps(tree) == []


def test_the_pixel_cap_is_configurable(tree: Path, executor: Executor) -> None:
    src = tree / "inbox" / "big.png"
    Image.new("L", (1500, 1000), 128).save(src)
    capped = executor.run(executor.plan(action(kind="convert_image", max_megapixels=1), src))
    assert capped.state == "failed" and "max_megapixels is 1" in (capped.error or "")
    record = executor.run(executor.plan(action(kind="convert_image"), src))
    assert record.state == "done", record.error
    with Image.open(record.plan["dst"]) as jpeg:
        assert jpeg.size == (1500, 1000)


def test_the_memory_cap_stops_a_decode_that_would_need_more(
    tree: Path, executor: Executor, snapshot: Snapshot, temps: Callable[..., Any]
) -> None:
    """400 megapixels let through the pixel cap: as RGB it needs 1.2 GB, over 256 MiB."""
    bomb = bomb_png(tree / "inbox" / "wallpaper.png")
    before = snapshot(tree)
    config = action(kind="convert_image", max_megapixels=500, memory_mb=256)
    record = executor.run(executor.plan(config, bomb))
    assert record.state == "failed"
    assert "memory" in (record.error or "")
    assert snapshot(tree) == before and temps(tree) == []
