"""The design's dependency rules, read from the source: serving never imports training or the
daemon, monitors never import training, the core imports none of the card folders (but the
CLI, which wires them), and the student worker starts without the training libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CARD = ("monitors", "daemon", "trainers", "service")
RULES = {  # folder -> the subpackages its modules must never import
    "service": ("trainers", "daemon"),
    "monitors": ("trainers",),
}


def imported(source: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, lazy ones inside functions included, and
    every string naming a stillroom module (`python -m stillroom.x`, import_module)."""
    tree = ast.parse(source.read_text(), str(source))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{source}:{node.lineno}: a relative import"
            module = node.module or ""
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out += [(node.lineno, word) for word in node.value.split() if _names_module(word)]
    return out


def _names_module(word: str) -> bool:
    return word.strip("`'\",;()").startswith("stillroom.")


def offences(folder: str, banned: tuple[str, ...], skip: str | None = None) -> list[str]:
    found = []
    for source in sorted((ROOT / folder).rglob("*.py")):
        if skip is not None and skip in source.relative_to(ROOT).parts:
            continue
        for line, name in imported(source):
            name = name.strip("`'\",;()")
            if any(name == f"stillroom.{b}" or name.startswith(f"stillroom.{b}.") for b in banned):
                found.append(f"{source.relative_to(ROOT)}:{line}: {name}")
    return found


@pytest.mark.parametrize("folder", sorted(RULES))
def test_a_folder_never_imports_what_the_design_forbids(folder: str) -> None:
    assert offences(folder, RULES[folder]) == []


def test_the_core_imports_no_card_folder_but_in_the_cli() -> None:
    assert offences("stillroom", CARD, skip="cli") == []


def test_the_rules_see_lazy_imports_and_module_strings(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "def f():\n"
        "    from stillroom.trainers.distill import distill_classifier\n"
        "    import stillroom.daemon.bus\n"
        "    return ['python', '-m', 'stillroom.trainers.worker']\n"
    )
    names = [name for _, name in imported(source)]
    assert names == [
        "stillroom.trainers.distill.distill_classifier",
        "stillroom.daemon.bus",
        "stillroom.trainers.worker",
    ]


def test_the_student_worker_starts_without_training_libraries() -> None:
    """What serving imports: no torch, sentence-transformers, scipy or scikit-learn (the `ml`
    extra) until a fallback asks for them."""
    heavy = ("torch", "sentence_transformers", "transformers", "scipy", "sklearn")
    probe = (
        "import sys\n"
        "import stillroom.service.worker, stillroom.service.student_models\n"
        "import stillroom.service.generator, stillroom.service.tagger_student\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr
