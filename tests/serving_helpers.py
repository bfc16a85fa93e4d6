"""Inputs shared by the serving tests: encoded photos and the bad inputs of issue 3."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from PIL import Image

from whyserve.serving import launcher

ROOT = Path(__file__).resolve().parent.parent
MODEL = "efficientnet_lite0"


def start_server(
    tmp_path_factory,
    config: str,
    build_options: tuple[str, ...] = (),
    models: tuple[str, ...] = (MODEL,),
    **start_options,
) -> launcher.TorchServe:
    """The real archives built by archives/build.py into a temporary model store, served by a
    TorchServe started with ``configs/<config>`` on free loopback ports; waits until READY."""
    store = tmp_path_factory.mktemp("model_store")
    build = [sys.executable, str(ROOT / "archives" / "build.py"), *models, "--export-path", str(store), *build_options]
    subprocess.run(build, check=True, capture_output=True)
    server = launcher.start(
        store, list(models), ROOT / "configs" / config, tmp_path_factory.mktemp("torchserve"), **start_options
    )
    try:
        server.wait_ready(timeout=240)
    except BaseException:
        server.stop()
        raise
    return server


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
