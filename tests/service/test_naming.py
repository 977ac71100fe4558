"""Collision-free names and temp names."""

from __future__ import annotations

from pathlib import Path

import pytest

from stillroom.errors import ActionError
from stillroom.service.hooks.naming import (
    check_plain_name,
    free_name,
    is_temp,
    numbered,
    split_name,
    temp_path,
)


@pytest.mark.parametrize(
    ("name", "stem", "ext"),
    [
        ("report.pdf", "report", ".pdf"),
        ("backup.tar.gz", "backup", ".tar.gz"),
        (".bashrc", ".bashrc", ""),
        ("README", "README", ""),
        ("a.b.c", "a.b", ".c"),
        (".tar.gz", ".tar", ".gz"),
    ],
)
def test_split_name(name: str, stem: str, ext: str) -> None:
    assert split_name(name) == (stem, ext)


def test_numbered_keeps_the_extension() -> None:
    assert numbered("report.pdf", 2) == "report (2).pdf"
    assert numbered("backup.tar.gz", 1) == "backup (1).tar.gz"
    assert numbered("README", 3) == "README (3)"


def test_free_name_skips_taken_names_and_dangling_links(tmp_path: Path) -> None:
    assert free_name(tmp_path, "a.txt") == tmp_path / "a.txt"
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "a (1).txt").symlink_to(tmp_path / "nowhere")
    assert free_name(tmp_path, "a.txt") == tmp_path / "a (2).txt"
    assert free_name(tmp_path / "missing", "a.txt") == tmp_path / "missing" / "a.txt"


def test_temp_names_are_recognised(tmp_path: Path) -> None:
    tmp = temp_path(tmp_path, 42, ".undo")
    assert tmp.name == ".stillroom-42.undo.tmp" and is_temp(tmp.name)
    assert not is_temp(".stillroom-notes.txt")


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "x\0y", ".stillroom-1.tmp"])
def test_check_plain_name_refuses(bad: str) -> None:
    with pytest.raises(ActionError):
        check_plain_name(bad)
