"""Convert an image to JPEG, PNG or WebP beside it (or into a folder); the original stays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from stillroom.config import ActionConfig, ConvertImageAction
from stillroom.errors import ActionError
from stillroom.events import Event
from stillroom.service.hooks.actions.base import Plan, short
from stillroom.service.hooks.actions.create import CreateAction
from stillroom.service.hooks.actions.files import exists, regular_file, write_new
from stillroom.service.hooks.naming import free_name, split_name

if TYPE_CHECKING:
    from PIL import Image

# config format -> (Pillow's format name, file extension)
FORMATS = {"jpeg": ("JPEG", ".jpg"), "png": ("PNG", ".png"), "webp": ("WEBP", ".webp")}


def image_format(path: Path) -> str:
    """Pillow's name for the file's format (reads the header only)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(image.format)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ActionError(f"{short(path)} is not an image Pillow can read ({exc})") from None


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def _for_format(image: Image.Image, fmt: str) -> Image.Image:
    """The image in a mode the target format can store; alpha over white for JPEG."""
    from PIL import Image

    if fmt == "jpeg":
        if _has_alpha(image):
            rgba = image.convert("RGBA")
            white = Image.new("RGB", rgba.size, (255, 255, 255))
            white.paste(rgba, mask=rgba.getchannel("A"))
            return white
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    keep = ("RGB", "RGBA") if fmt == "webp" else ("RGB", "RGBA", "L", "LA", "P", "1", "I;16")
    if image.mode in keep:
        return image
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def convert(src: Path, out: IO[bytes], fmt: str, quality: int) -> None:
    """Write src, converted to `fmt`, into `out` (upright per EXIF; first frame only)."""
    from PIL import Image, ImageOps

    with Image.open(src) as opened:
        image = _for_format(ImageOps.exif_transpose(opened), fmt)
        if fmt == "png":
            image.save(out, "PNG", optimize=False)
        else:
            image.save(out, FORMATS[fmt][0], quality=quality)


class ConvertImage(CreateAction):
    """`convert_image`: a converted copy named `<stem>.<jpg|png|webp>`, numbered when taken."""

    kind: ClassVar[str] = "convert_image"
    output = "converted file"

    def plan(self, config: ActionConfig, path: Path, event: Event | None) -> Plan:
        if not isinstance(config, ConvertImageAction):
            raise ActionError(f"{self.kind} got a {config.kind} config")
        src = regular_file(path)
        pillow_name, ext = FORMATS[config.format]
        folder = Path(os.path.abspath(config.to)) if config.to else src.parent
        if exists(folder) and not folder.is_dir():
            raise ActionError(f"{short(folder)} is not a folder")
        if image_format(src) == pillow_name and folder == src.parent:
            raise ActionError(f"{short(src)} is already {pillow_name}")
        want = split_name(src.name)[0] + ext
        params = {
            "src": str(src),
            "dst": str(free_name(folder, want)),
            "want": want,
            "format": config.format,
            "quality": config.quality,
        }
        return Plan(self.kind, params)

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        return (
            f"convert {short(params['src'])} -> {short(params['dst'])}"
            f" ({params['format']}, quality {params['quality']})"
        )

    def write(self, plan: dict[str, Any], tmp: Path) -> str | None:
        src, fmt, quality = Path(plan["src"]), plan["format"], plan["quality"]
        write_new(tmp, lambda out: convert(src, out, fmt, quality))
        return None
