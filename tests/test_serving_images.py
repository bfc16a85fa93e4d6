"""whyserve.serving.images: limits checked from the header, EXIF orientation, one rule per PIL
mode, truncated data refused (issue 8)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image, ImageFile

from serving_helpers import encoded
from whyserve.serving.errors import ServingError
from whyserve.serving.images import BACKGROUND, ImageLimits, decode_image, resize_rule, to_rgb


@pytest.fixture(scope="module")
def effnet_resize(effnet):
    return resize_rule(effnet.view)


def _refused(data: bytes, status: int, message: str, **options) -> ServingError:
    with pytest.raises(ServingError) as error:
        decode_image(data, **options)
    assert error.value.status == status and message in error.value.message, error.value.message
    return error.value


# -- limits ----------------------------------------------------------------------------------


def test_resize_rule_is_the_models_short_side_256(effnet_resize):
    assert effnet_resize(20_000, 1) == (5_120_000, 256)
    assert effnet_resize(451, 300) == (384, 256) and effnet_resize(300, 451) == (256, 384)


def test_aspect_ratio_bomb_is_refused_from_the_header(effnet_resize):
    error = _refused(encoded(Image.new("RGB", (20_000, 1))), 413, "aspect ratio of 20,000.0", resized=effnet_resize)
    assert "the limit is an aspect ratio (long side / short side) of 20" in error.message
    _refused(encoded(Image.new("RGB", (1, 300))), 413, "of 7", limits=ImageLimits(max_aspect_ratio=7), resized=effnet_resize)


def test_pixels_after_the_resize_are_limited(effnet_resize):
    wide = encoded(Image.new("RGB", (4_000, 250)))  # ratio 16, resized to 4096x256 = 1,048,576 pixels
    assert decode_image(wide, resized=effnet_resize).size == (4_000, 250)
    error = _refused(
        wide,
        413,
        "resizes to 4096x256 = 1,048,576 pixels",
        limits=ImageLimits(max_resized_pixels=1_000_000),
        resized=effnet_resize,
    )
    assert "the limit is 1,000,000 pixels after the model's resize" in error.message


def test_bomb_message_names_the_configured_limit():
    from serving_helpers import png_bomb

    error = _refused(png_bomb(), 413, "decompression bomb", limits=ImageLimits(max_pixels=1_234_567))
    assert "the limit is 1,234,567 pixels" in error.message and error.valid == ["at most 1,234,567 pixels"]


# -- truncated and corrupt data --------------------------------------------------------------


def _jpeg(photos) -> bytes:
    return encoded(photos["chelsea"], "JPEG", quality=90)


def test_jpeg_cut_in_half_with_an_end_marker_is_refused(photos):
    data = _jpeg(photos)
    _refused(data[: len(data) // 2] + b"\xff\xd9", 400, "truncated or corrupt")


def test_jpeg_whose_header_claims_more_rows_than_its_data_is_refused(photos):
    data = _jpeg(photos)
    sof = data.find(b"\xff\xc0")
    height, width = struct.unpack(">HH", data[sof + 5 : sof + 9])
    _refused(data[: sof + 5] + struct.pack(">HH", height * 2, width) + data[sof + 9 :], 400, "truncated or corrupt")


def test_png_cut_in_half_is_refused(photos):
    data = encoded(photos["chelsea"])
    _refused(data[: len(data) // 2] + data[-12:], 400, "truncated or corrupt")  # + the IEND chunk


def test_pil_load_truncated_images_switched_on_elsewhere_is_caught(photos, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    _refused(_jpeg(photos), 500, "LOAD_TRUNCATED_IMAGES")


def test_complete_jpeg_and_a_grey_photo_with_other_levels_decode(photos):
    assert decode_image(_jpeg(photos)).size == photos["chelsea"].size
    assert decode_image(encoded(Image.new("RGB", (64, 64), (120, 120, 120)), "JPEG")).size == (64, 64)


# -- EXIF orientation --------------------------------------------------------------------------


def rotated_with_exif(image: Image.Image, fmt: str = "PNG") -> bytes:
    """Stored turned 90 degrees counter-clockwise, with EXIF orientation 6 ("rotate 90 CW to
    display"): a viewer shows the upright photo."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(image.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif.tobytes())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(photos, fmt):
    upright = decode_image(encoded(photos["chelsea"], fmt))
    turned = decode_image(rotated_with_exif(photos["chelsea"], fmt))
    assert turned.size == upright.size == photos["chelsea"].size
    difference = np.abs(np.asarray(turned, dtype=float) - np.asarray(upright, dtype=float)).mean()
    assert difference < (0.01 if fmt == "PNG" else 3.0), difference


# -- one rule per mode -------------------------------------------------------------------------


def _pixel(image: Image.Image) -> tuple[int, int, int]:
    rgb = decode_image(encoded(image, "PNG" if image.mode != "CMYK" else "JPEG"))
    assert rgb.mode == "RGB"
    return rgb.getpixel((0, 0))


def test_16_bit_grey_is_scaled_not_clipped():
    grey = np.full((8, 8), 32_896, dtype=np.uint16)  # 128 x 257
    image = Image.fromarray(grey)
    assert image.mode == "I;16"
    assert _pixel(image) == (128, 128, 128)  # PIL's own convert("L") gives 255: white


def test_32_bit_integer_grey_is_taken_as_16_bit():
    assert to_rgb(Image.fromarray(np.full((4, 4), 65_535, dtype=np.int32))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.fromarray(np.full((4, 4), 257 * 10, dtype=np.int32))).getpixel((0, 0)) == (10, 10, 10)


def test_float_grey_is_taken_as_0_to_1():
    assert to_rgb(Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32))).getpixel((0, 0)) == (128, 128, 128)
    assert to_rgb(Image.fromarray(np.full((4, 4), 7.0, dtype=np.float32))).getpixel((0, 0)) == (255, 255, 255)


def test_alpha_is_composited_over_the_stated_background():
    assert BACKGROUND == (255, 255, 255)
    assert _pixel(Image.new("RGBA", (4, 4), (0, 0, 0, 0))) == BACKGROUND  # hidden black is not what is seen
    assert _pixel(Image.new("RGBA", (4, 4), (0, 0, 200, 255))) == (0, 0, 200)
    assert _pixel(Image.new("RGBA", (4, 4), (0, 0, 0, 128))) == (127, 127, 127)
    assert _pixel(Image.new("LA", (4, 4), (0, 0))) == BACKGROUND
    assert to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 0)).convert("RGBa")).getpixel((0, 0)) == BACKGROUND


def test_palette_with_and_without_transparency():
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert _pixel(palette) == (10, 200, 30)
    palette.info["transparency"] = 1
    assert _pixel(palette) == BACKGROUND


def test_grey_bilevel_and_cmyk():
    assert _pixel(Image.new("L", (4, 4), 77)) == (77, 77, 77)
    assert _pixel(Image.new("1", (4, 4), 1)) == (255, 255, 255)
    cyan = _pixel(Image.new("CMYK", (16, 16), (255, 0, 0, 0)))
    assert cyan[0] < 10 and cyan[1] > 245 and cyan[2] > 245, cyan


def test_a_mode_without_a_rule_is_refused():
    with pytest.raises(ServingError, match="image mode HSV is not supported"):
        to_rgb(Image.new("HSV", (4, 4)))
