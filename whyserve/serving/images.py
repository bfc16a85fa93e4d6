"""Image bytes -> the upright RGB picture a model should see, or a ``ServingError``.

Framework-neutral. Everything that could cost memory is checked from the header, before any
pixel is decoded: the stored pixel count, the aspect ratio, and the pixel count after the
resize the model will do (a 20000x1 PNG is 143 bytes, but resized to a 256 short side it is
5,120,000x256 pixels). Then the image is decoded completely or refused (no grey fill),
turned upright by its EXIF orientation, and converted to RGB by one stated rule per mode
(``MODE_RULES``). A JPEG at least twice the model's resize target on both sides is decoded
by libjpeg at 1/2, 1/4 or 1/8 scale (``Image.draft``), never below that target: the model
resizes it down anyway (a 4000x3000 photo: decode ~3x faster, and a 500x375 image to resize).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from whyserve.serving.errors import ServingError

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_PIXELS = 25_000_000
DEFAULT_MAX_RESIZED_PIXELS = 4_000_000
DEFAULT_MAX_ASPECT_RATIO = 20.0
BACKGROUND = (255, 255, 255)  # transparent pixels are shown over white, as a browser page would

MODE_RULES = {
    "RGB": "as stored",
    "L, 1": "grey copied to R, G and B",
    "I;16, I;16B, I;16L, I (16-bit PNG grey)": "scaled to 8 bits (value / 257, rounded), then grey",
    "F": "floats in [0, 1] scaled to 8 bits (clipped), then grey",
    "RGBA, LA, PA, RGBa, La, P with transparency": f"composited over the background {BACKGROUND}",
    "P": "palette looked up",
    "CMYK, YCbCr": "PIL's conversion to RGB",
}

ResizeRule = Callable[[int, int], tuple[int, int]]


@dataclass(frozen=True)
class ImageLimits:
    """What ``decode_image`` accepts; every message names the limit it applied."""

    max_pixels: int = DEFAULT_MAX_PIXELS  # stored width x height
    max_resized_pixels: int = DEFAULT_MAX_RESIZED_PIXELS  # width x height after the model's resize
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO  # long side / short side

    def check(self, size: tuple[int, int], resized: ResizeRule | None) -> None:
        width, height = size
        if width < 1 or height < 1:
            raise ServingError(400, f"the image is {width}x{height} pixels", ["at least 1x1 pixels"], "corrupt_image")
        if width * height > self.max_pixels:
            raise _too_large(f"{width}x{height} = {width * height:,} pixels", f"{self.max_pixels:,} pixels")
        ratio = max(width, height) / min(width, height)
        if ratio > self.max_aspect_ratio:
            raise _too_large(
                f"{width}x{height}, an aspect ratio of {ratio:,.1f}",
                f"an aspect ratio (long side / short side) of {self.max_aspect_ratio:g}",
            )
        new_width, new_height = resized(width, height) if resized else size
        if new_width * new_height > self.max_resized_pixels:
            raise _too_large(
                f"{width}x{height}, which the model resizes to {new_width}x{new_height} = {new_width * new_height:,} pixels",
                f"{self.max_resized_pixels:,} pixels after the model's resize",
            )


def _too_large(what: str, limit: str) -> ServingError:
    return ServingError(413, f"the image is {what}; the limit is {limit}", [f"at most {limit}"], "too_large")


def resize_rule(view: object) -> ResizeRule | None:
    """The size a model's ``view`` resizes an image to, from its torchvision ``Resize``
    (first transform of a ``Compose``); None when the view is not one (such views are taken
    not to enlarge: a fixed-size resize, like the flowers models' 96x96)."""
    transforms = getattr(view, "transforms", [view])
    first = transforms[0] if transforms else None
    size = getattr(first, "size", None)
    if type(first).__name__ != "Resize" or not size:
        return None
    if len(size) == 2:
        return lambda width, height: (int(size[1]), int(size[0]))
    short, max_size = int(size[0]), getattr(first, "max_size", None)

    def resized(width: int, height: int) -> tuple[int, int]:
        long = int(short * max(width, height) / min(width, height))
        new_short = short
        if max_size is not None and long > max_size:
            new_short, long = int(max_size * short / long), max_size
        return (new_short, long) if width <= height else (long, new_short)

    return resized


def decode_image(data: bytes, limits: ImageLimits | int = ImageLimits(), resized: ResizeRule | None = None) -> Image.Image:
    """An upright RGB image, or ``ServingError``: 400 (not an image, corrupt, truncated),
    415 (a format other than JPEG/PNG/WebP), 413 (over a limit of ``limits``; an int is
    ``max_pixels``). ``resized``: the model's resize rule (see ``resize_rule``)."""
    if isinstance(limits, int):
        limits = ImageLimits(max_pixels=limits)
    if not data:
        raise ServingError(400, "the image is empty (0 bytes)", IMAGE_FORMATS, "empty_body")
    image = _open(data, limits)
    if image.format not in IMAGE_FORMATS:
        raise ServingError(415, f"image format {image.format} is not supported", IMAGE_FORMATS, "unsupported_format")
    limits.check(image.size, resized)
    scale = _draft(image, resized)
    upright = _load_upright(image, scale)
    limits.check(upright.size, resized)  # not needed (a transpose keeps the ratio) but cheap
    return to_rgb(upright)


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        limit = f"{limits.max_pixels:,} pixels"
        raise _too_large(f"a decompression bomb (its header claims over {Image.MAX_IMAGE_PIXELS:,} pixels)", limit) from None
    except UnidentifiedImageError:
        raise ServingError(400, "the body is not an image PIL can identify", IMAGE_FORMATS, "not_an_image") from None
    except Exception as error:  # noqa: BLE001 - a malformed header can raise anything
        raise ServingError(400, f"the image header is corrupt ({error})", IMAGE_FORMATS, "corrupt_image") from None


EXIF_ORIENTATION, TURNED = 0x0112, (5, 6, 7, 8)  # orientations that swap width and height


def _draft(image: Image.Image, resized: ResizeRule | None) -> int:
    """Let libjpeg decode a JPEG at the coarsest of 1/2, 1/4, 1/8 that keeps both sides at or
    above the model's resize target (``Image.draft`` picks it); returns the scale taken (1: none)."""
    if image.format != "JPEG" or resized is None:
        return 1
    width, height = image.size
    turned = image.getexif().get(EXIF_ORIENTATION) in TURNED  # the resize applies to the upright image
    target = resized(height, width)[::-1] if turned else resized(width, height)
    image.draft(image.mode, target)  # same mode: only the size changes
    return max(1, round(width / image.size[0]))


def _load_upright(image: Image.Image, scale: int = 1) -> Image.Image:
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # set by some library in this process: PIL would grey-fill
        raise ServingError(500, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this worker", ["False"], "internal")
    try:
        image.load()
        if image.format == "JPEG" and _grey_filled(image, scale):
            raise OSError("the scan data ends before the last rows (libjpeg would fill them with grey)")
        return ImageOps.exif_transpose(image)
    except Exception as error:  # noqa: BLE001 - truncated and corrupt data raise OSError, SyntaxError, ...
        raise ServingError(400, f"the image data is truncated or corrupt ({error})", IMAGE_FORMATS, "corrupt_image") from None


def _grey_filled(image: Image.Image, scale: int = 1) -> bool:
    """libjpeg decodes a JPEG whose data stops early (then an end marker) without an error, with
    zero coefficients for the missing blocks: the last MCU row comes out exactly mid-grey. An
    image whose bottom 8 rows (8 / scale when decoded at 1/scale) are exactly (128, 128, 128)
    is refused for that reason."""
    if image.mode not in ("L", "RGB"):
        return False
    rows = max(1, 8 // scale)
    strip = np.asarray(image.crop((0, max(0, image.height - rows), image.width, image.height)))
    return bool((strip == 128).all())


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB by the rule of ``MODE_RULES`` for the image's mode."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        levels = np.asarray(image, dtype=np.float64) / 257.0
        return _grey(levels)
    if mode == "F":
        return _grey(np.asarray(image, dtype=np.float64) * 255.0)
    if (mode == "P" and "transparency" in image.info) or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("L", "1", "P", "CMYK", "YCbCr"):
        return image.convert("RGB")
    raise ServingError(415, f"image mode {mode} is not supported", list(MODE_RULES), "unsupported_format")


def _grey(levels: np.ndarray) -> Image.Image:
    grey = np.clip(np.rint(levels), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
