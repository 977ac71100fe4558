"""The child process that decodes an image for convert_image, and nothing else.

Run as `python -I image_worker.py FORMAT QUALITY MAX_PIXELS MEMORY_MB SECONDS` with the
source on stdin (a descriptor the parent opened without following a link and checked) and
the new temp file on stdout. It caps its own address space, file size and CPU time before
Pillow is imported, opens only an allowlist of formats recognised from the first bytes, and
treats a decompression-bomb warning as an error. It imports nothing of stillroom (the parent
imports `sniff` and `available` from here), so it starts in a fraction of a second.
"""

from __future__ import annotations

import importlib.util
import math
import os
import resource
import sys
import warnings
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

BASE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
# config format -> (Pillow's format name, file extension)
TARGETS = {"jpeg": ("JPEG", ".jpg"), "png": ("PNG", ".png"), "webp": ("WEBP", ".webp")}
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
AVIF_BRANDS = (b"avif", b"avis")
HEAD = 32
REFUSED = 3  # exit status: the input is not one this worker opens (format, size)
NO_MEMORY = 4


def sniff(head: bytes) -> str | None:
    """Pillow's name for the image format the first bytes announce, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 18:
        return "BMP"
    if head[4:8] == b"ftyp":
        brands = [head[i : i + 4] for i in range(8, min(len(head), HEAD) - 3, 4)]
        if any(b in AVIF_BRANDS for b in brands):
            return "AVIF"
        if any(b in HEIF_BRANDS for b in brands):
            return "HEIF"
    return None


def what(head: bytes) -> str:
    """A name for what a refused file looks like, for the error message."""
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "PostScript/EPS"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    return "an unknown format"


def available() -> set[str]:
    """The formats opened here: the six above, AVIF and HEIF only where a plugin reads them."""
    found = set(BASE_FORMATS)
    if importlib.util.find_spec("pillow_heif") is not None:
        found.add("HEIF")
    try:
        from PIL import features

        if features.check_module("avif"):
            found.add("AVIF")
    except (ImportError, ValueError):  # a Pillow that predates its own AVIF support
        pass
    if importlib.util.find_spec("pillow_avif") is not None:
        found.add("AVIF")
    return found


def _register(kind: str) -> None:
    if kind == "HEIF":
        import pillow_heif  # type: ignore[import-not-found, unused-ignore]

        pillow_heif.register_heif_opener()
    elif kind == "AVIF" and importlib.util.find_spec("pillow_avif") is not None:
        import pillow_avif  # type: ignore[import-not-found, unused-ignore]  # noqa: F401


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


def convert(
    src: IO[bytes], out: IO[bytes], kind: str, fmt: str, quality: int, max_pixels: int
) -> None:
    """Decode src (as `kind` only), write it converted to `fmt` (upright per EXIF; first
    frame only). More than `max_pixels` is an error, a decompression-bomb warning too."""
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(src, formats=[kind]) as opened:
            if opened.width * opened.height > max_pixels:
                raise Image.DecompressionBombError(f"{opened.width}x{opened.height} pixels")
            image = _for_format(ImageOps.exif_transpose(opened), fmt)
            if fmt == "png":
                image.save(out, "PNG", optimize=False)
            else:
                image.save(out, TARGETS[fmt][0], quality=quality)


def _limit(kind: int, value: int) -> None:
    _, hard = resource.getrlimit(kind)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(kind, (value, value if hard == resource.RLIM_INFINITY else hard))


def _fail(status: int, message: str) -> int:
    sys.stderr.write(message.strip() + "\n")
    return status


def main(argv: list[str]) -> int:
    fmt, quality, max_pixels, memory_mb = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    seconds = float(argv[5])
    _limit(resource.RLIMIT_AS, memory_mb << 20)
    _limit(resource.RLIMIT_FSIZE, max_pixels * 5 + (64 << 20))  # a PNG of RGBA, and then some
    _limit(resource.RLIMIT_CPU, math.ceil(seconds) + 1)
    _limit(resource.RLIMIT_CORE, 0)
    src = open(0, "rb", closefd=False)  # noqa: SIM115 - the descriptor is the parent's
    out = open(1, "wb", closefd=False)  # noqa: SIM115
    head = os.pread(0, HEAD, 0)
    kind = sniff(head)
    if kind is None:
        return _fail(REFUSED, f"not an image stillroom converts ({what(head)})")
    if kind not in available():
        return _fail(REFUSED, f"{kind}, and no Pillow plugin for {kind} is installed")
    _register(kind)
    from PIL import Image

    try:
        convert(src, out, kind, fmt, quality, max_pixels)
        out.flush()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        cap = f"max_megapixels is {max_pixels / 1e6:g}"
        return _fail(REFUSED, f"refused as a possible decompression bomb: {exc} ({cap})")
    except MemoryError:
        return _fail(NO_MEMORY, f"ran out of memory (the limit is {memory_mb} MiB)")
    except Exception as exc:  # whatever Pillow raises on a broken file: one line for the parent
        return _fail(1, f"cannot convert it: {exc or type(exc).__name__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
