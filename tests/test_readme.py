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
