"""Convert an image to JPEG, PNG or WebP beside it (or into a folder); the original stays.

Images come from the internet, and image decoders are where their bugs live: nothing is
decoded in this process. The format is recognised from the first bytes against an allowlist
(never PostScript, EPS or PDF, which Pillow hands to Ghostscript), and a child process
(image_worker.py) decodes and encodes under a memory, file-size and time cap, with a minimal
environment, reading the checked source descriptor and writing into the journaled temp.
What it wrote is linked into place only once it reads as the format asked for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from stillroom.config import ActionConfig, ConvertImageAction
from stillroom.errors import ActionError
from stillroom.events import Event
from stillroom.service.hooks.actions.base import Plan, short
from stillroom.service.hooks.actions.create import CreateAction
from stillroom.service.hooks.actions.files import exists, identity, open_regular, regular_file
from stillroom.service.hooks.actions.image_worker import (
    BASE_FORMATS,
    HEAD,
    TARGETS,
    available,
    sniff,
    what,
)
from stillroom.service.hooks.naming import free_name, split_name

WORKER = Path(__file__).with_name("image_worker.py")
# Nothing for the child to find on a PATH (Pillow's EPS plugin would look for Ghostscript);
# one arena keeps its address space, which the memory cap counts, close to what it uses.
CHILD_ENV = {"PATH": "", "LC_ALL": "C.UTF-8", "MALLOC_ARENA_MAX": "1"}
DEFAULTS = {"max_megapixels": 50.0, "memory_mb": 1024, "timeout": 60.0}
TAIL = 500


def check_format(fd: int, path: str | Path) -> str:
    """Pillow's name for the format the file's first bytes announce; ActionError unless it
    is one stillroom opens."""
    head = os.pread(fd, HEAD, 0)
    kind = sniff(head)
    if kind is None:
        allowed = ", ".join(BASE_FORMATS)
        raise ActionError(
            f"{short(path)} is not an image stillroom converts (it looks like {what(head)};"
            f" only {allowed}, and HEIC/AVIF with their plugin, are opened)"
        )
    if kind not in available():
        raise ActionError(f"{short(path)} is {kind}, and no Pillow plugin for {kind} is installed")
    return kind


def image_format(path: Path, expect: list[int] | None = None) -> str:
    """check_format() of a file, read without following a link."""
    try:
        fd = open_regular(path, expect=expect)
    except FileNotFoundError:
        raise ActionError(f"{short(path)} does not exist") from None
    try:
        return check_format(fd, path)
    finally:
        os.close(fd)


def run_worker(plan: dict[str, Any], src: int, out: BinaryIO) -> None:
    """Decode src and write the converted image into out, in the capped child."""
    settings = {**DEFAULTS, **{k: plan[k] for k in DEFAULTS if k in plan}}
    timeout = float(settings["timeout"])
    argv = [
        sys.executable,
        "-I",  # no environment variables, no user site, not the script's own folder
        str(WORKER),
        plan["format"],
        str(int(plan["quality"])),
        str(int(float(settings["max_megapixels"]) * 1_000_000)),
        str(int(settings["memory_mb"])),
        str(timeout),
    ]
    os.lseek(src, 0, os.SEEK_SET)
    proc = subprocess.Popen(
        argv,
        stdin=src,
        stdout=out.fileno(),
        stderr=subprocess.PIPE,
        env=CHILD_ENV,
        cwd="/",
        close_fds=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ActionError(f"the image took longer than {timeout:g} s to convert; stopped") from None
    detail = err[-TAIL:].decode("utf-8", "replace").strip()
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise ActionError(
            f"the converter was stopped by {name}" + (f": {detail}" if detail else "")
        )
    if proc.returncode != 0:
        raise ActionError(f"{short(plan['src'])}: {detail or f'exit status {proc.returncode}'}")


class ConvertImage(CreateAction):
    """`convert_image`: a converted copy named `<stem>.<jpg|png|webp>`, numbered when taken."""

    kind: ClassVar[str] = "convert_image"
    output = "converted file"

    def plan(self, config: ActionConfig, path: Path, event: Event | None) -> Plan:
        if not isinstance(config, ConvertImageAction):
            raise ActionError(f"{self.kind} got a {config.kind} config")
        src = regular_file(path)
        pillow_name, ext = TARGETS[config.format]
        folder = Path(os.path.abspath(config.to)) if config.to else src.parent
        if exists(folder) and not folder.is_dir():
            raise ActionError(f"{short(folder)} is not a folder")
        src_id = identity(src)
        if image_format(src, src_id) == pillow_name and folder == src.parent:
            raise ActionError(f"{short(src)} is already {pillow_name}")
        want = split_name(src.name)[0] + ext
        params = {
            "src": str(src),
            "dst": str(free_name(folder, want)),
            "want": want,
            "format": config.format,
            "quality": config.quality,
            "max_megapixels": config.max_megapixels,
            "memory_mb": config.memory_mb,
            "timeout": config.timeout,
            "src_id": src_id,
        }
        return Plan(self.kind, params)

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        return (
            f"convert {short(params['src'])} -> {short(params['dst'])}"
            f" ({params['format']}, quality {params['quality']})"
        )

    def write(self, plan: dict[str, Any], out: BinaryIO) -> str | None:
        src = open_regular(plan["src"], expect=plan["src_id"])
        try:
            check_format(src, plan["src"])  # again: the bytes may have changed since the plan
            run_worker(plan, src, out)
        finally:
            os.close(src)
        # Only what reads as the format asked for is linked into place.
        head = os.pread(out.fileno(), HEAD, 0)
        if os.fstat(out.fileno()).st_size == 0 or sniff(head) != TARGETS[plan["format"]][0]:
            raise ActionError(f"the converter wrote something that is not {plan['format']}")
        return None
