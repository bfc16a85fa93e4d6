"""Inputs shared by the serving tests: encoded photos and the bad inputs of issue 3."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def truncated_jpeg(image: Image.Image) -> bytes:
    data = encoded(image, "JPEG", quality=90)
    return data[: len(data) // 2]


def corrupt_jpeg(image: Image.Image) -> bytes:
    data = bytearray(encoded(image, "JPEG", quality=90))
    data[600:4000] = b"\xff" * 3400  # garbage inside the entropy-coded scan and tables
    return bytes(data)


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny, valid-looking PNG whose header claims width x height pixels (a decompression bomb)."""
    data = bytearray(encoded(Image.new("L", (1, 1))))
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def gif(image: Image.Image) -> bytes:
    return encoded(image.resize((32, 32)), "GIF")
