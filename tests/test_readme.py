"""The README is tested: its config example is valid and its quick start is what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from stillroom.config import Config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_yaml_examples_are_valid_configs() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README, flags=re.S)
    assert blocks
    for block in blocks:
        config = Config.from_data(yaml.safe_load(block), "README.md")
        assert config.automations


def test_quick_start_is_make_run_and_make_test() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [
        line.split("#")[0].strip() for line in quick.splitlines() if line.startswith("make")
    ]
    assert commands == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_test_security_md_names_exists() -> None:
    """SECURITY.md says which test shows each defence: each one it names must exist."""
    text = (ROOT / "SECURITY.md").read_text()
    named = set(re.findall(r"(?<![/\w])(test_[a-z0-9_]+)\b(?!\.py)", text))
    files = set(re.findall(r"`(tests/[\w/]+\.py)", text))
    assert len(named) > 20 and files
    defined = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    missing = sorted(n for n in named if f"def {n}(" not in defined)
    assert not missing, f"SECURITY.md names tests that do not exist: {missing}"
    assert all((ROOT / f).is_file() for f in files), files
