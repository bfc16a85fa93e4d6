"""Inputs shared by the serving tests: encoded photos and the bad inputs of issue 3."""

from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image

from whyserve.serving import launcher

ROOT = Path(__file__).resolve().parent.parent
MODEL = "efficientnet_lite0"


def start_server(
    tmp_path_factory,
    config: str,
    build_options: tuple[str, ...] = (),
    models: tuple[str, ...] = (MODEL,),
    unready: tuple[str, ...] = (),
    **start_options,
) -> launcher.TorchServe:
    """The real archives built by archives/build.py into a temporary model store, served by a
    TorchServe started with ``configs/<config>`` on free loopback ports; waits until READY.
    ``unready``: archives (from ``broken_archive``) registered too but not waited for."""
    store = tmp_path_factory.mktemp("model_store")
    build = [sys.executable, str(ROOT / "archives" / "build.py"), *models, "--export-path", str(store), *build_options]
    subprocess.run(build, check=True, capture_output=True)
    for name in unready:
        broken_archive(store, name)
    workdir = tmp_path_factory.mktemp("torchserve")
    server = launcher.start(store, [*models, *unready], ROOT / "configs" / config, workdir, **start_options)
    server.models = list(models)
    try:
        server.wait_ready(timeout=240)
    except BaseException:
        server.stop()
        raise
    return server


def broken_archive(store: Path, name: str) -> None:
    """An archive whose model-config names a model whose worker cannot load (unknown model)."""
    config = store / f"{name}-config.yaml"
    config.write_text("minWorkers: 1\nmaxWorkers: 1\nhandler:\n  model: no_such_model\n")
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    handler = ROOT / "whyserve" / "serving" / "handler.py"
    command = [str(archiver), "--model-name", name, "--version", "1.0", "--handler", str(handler)]
    subprocess.run(
        [*command, "--config-file", str(config), "--export-path", str(store), "--force"], check=True, capture_output=True
    )


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


# -- HTTP requests in the three forms of DESIGN.md ----------------------------------------------


def raw(image: bytes, **options) -> dict:
    headers = {"Content-Type": "application/octet-stream"} | {f"X-Explain-{k.capitalize()}": str(v) for k, v in options.items()}
    return {"data": image, "headers": headers}


def as_json(image: bytes, **options) -> dict:
    return {"json": {"image": base64.b64encode(image).decode("ascii"), **options}}


def multipart(image: bytes, **options) -> dict:
    return {"files": {"image": ("photo", image, "application/octet-stream")}, "data": {k: str(v) for k, v in options.items()}}


def post(url: str, request: dict, timeout: float = 120) -> requests.Response:
    return requests.post(url, timeout=timeout, **request)


def worker_pids(server: launcher.TorchServe, model: str = MODEL) -> tuple[int, ...]:
    """The sorted PIDs of the model's workers (management API), which must all be READY."""
    described = requests.get(
        f"{server.management_url}/models/{model}", headers=server.auth_headers("management"), timeout=10
    ).json()
    workers = described[0]["workers"]
    assert workers and all(worker["status"] == "READY" for worker in workers), workers
    return tuple(sorted(worker["pid"] for worker in workers))


def concurrently(url: str, requests_: list[dict]) -> list[requests.Response]:
    """All at once (a barrier releases them together) so that they share batches."""
    barrier = threading.Barrier(len(requests_))

    def send(request):
        barrier.wait()
        return post(url, request)

    with ThreadPoolExecutor(len(requests_)) as pool:
        return list(pool.map(send, requests_))
