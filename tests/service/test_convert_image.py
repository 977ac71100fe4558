"""convert_image on real images made by Pillow: the output, the original, the undo."""

from __future__ import annotations

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
