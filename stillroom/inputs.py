"""How a situation is written down as a student's input, and a user's choice as its output."""

from __future__ import annotations

from pathlib import Path

from stillroom.events import FileFeatures


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def file_input_text(features: FileFeatures) -> str:
    """A file as a student reads it: name, type, size and the start of its text."""
    lines = [
        f"name: {features.name}",
        f"type: {features.mime}" + (f" (.{features.extension})" if features.extension else ""),
        f"size: {human_size(features.size)}",
    ]
    if features.snippet:
        lines.append(f"text: {' '.join(features.snippet.split())[:300]}")
    return "\n".join(lines)


def destination_label(path: Path | str, home: Path | None = None) -> str:
    """The folder a file was filed into, relative to the home folder when inside it."""
    folder = Path(path).parent
    home = home or Path.home()
    try:
        return folder.relative_to(home).as_posix() or "."
    except ValueError:
        return folder.as_posix()
