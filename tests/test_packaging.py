"""`pip install .` ships every card folder as a subpackage of stillroom, and the default config."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_holds_every_module_under_its_installed_name(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("stillroom-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("stillroom", "monitors", "daemon", "trainers", "service", "configs"):
        for source in (ROOT / folder).rglob("*.py"):
            relative = source.relative_to(ROOT / folder).as_posix()
            installed = relative if folder == "stillroom" else f"{folder}/{relative}"
            assert f"stillroom/{installed}" in names, f"{source} missing from the wheel"
    assert "stillroom/configs/default.yaml" in names
    assert not any(n.split("/")[0] in {"daemon", "service", "monitors"} for n in names)
