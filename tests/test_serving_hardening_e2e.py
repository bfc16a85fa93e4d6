"""Issue 8 end to end: every reproduction against a real TorchServe 0.12 serving the real
efficientnet_lite0 archive (explanation budget on) and efficientnet_lite0_exact (its own worker
for exact Score-CAM). Each input class asserts status and message; the worker's PID must not
change, its peak RSS must stay below 1.5 GB, and a good request in the same batch succeeds."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving_helpers import MODEL, as_json, concurrently, encoded, png_bomb, post, raw, start_server, worker_pids

pytestmark = pytest.mark.slow
EXACT = "efficientnet_lite0_exact"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ts = start_server(tmp_path_factory, "local.properties", models=(MODEL, EXACT))
    yield ts
    ts.stop()


@pytest.fixture(scope="module")
def chelsea(chelsea_png):
    return chelsea_png


def peak_rss_gb(pid: int) -> float:
    """The worker's peak resident memory since it started (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise AssertionError("no VmHWM")


def body(data: bytes, content_type: str = "application/json") -> dict:
    return {"data": data, "headers": {"Content-Type": content_type}}


def two_images(first: bytes, second: bytes) -> dict:
    return {"files": [("image", ("a.png", first, "image/png")), ("image", ("b.png", second, "image/png"))]}


def bad_requests(chelsea: bytes, photos) -> list[tuple[dict, int, str]]:
    jpeg = encoded(photos["chelsea"], "JPEG", quality=90)
    sof = jpeg.find(b"\xff\xc0")
    taller = jpeg[: sof + 5] + (int.from_bytes(jpeg[sof + 5 : sof + 7], "big") * 2).to_bytes(2, "big") + jpeg[sof + 7 :]
    image = base64.b64encode(chelsea)
    deep = b"[" * 10_000 + b"]" * 10_000
    return [
        (raw(encoded(Image.new("RGB", (20_000, 1)))), 413, "the limit is an aspect ratio (long side / short side) of 20"),
        (raw(png_bomb()), 413, "the limit is 25,000,000 pixels"),
        (two_images(chelsea, encoded(photos["coffee"])), 400, "one image per request"),
        (raw(jpeg[: len(jpeg) // 2] + b"\xff\xd9"), 400, "truncated or corrupt"),
        (raw(taller), 400, "truncated or corrupt"),
        (raw(chelsea, outputs=","), 400, "outputs"),
        (body(b"-1"), 400, "must be an object, not a number"),
        (body(b"42.5"), 400, "must be an object, not a number"),
        (body(b"100000000000"), 400, "must be an object, not a number"),
        (body(b'"abc"'), 400, "must be an object, not a string"),
        (body(deep), 400, "10000 levels deep; the limit is 32"),
        (body(b'{"image": "' + image + b'", "target": ' + deep + b"}"), 400, "levels deep; the limit is 32"),
        (body(b'{"image": "' + image + b'", "target": ' + b"9" * 5000 + b"}"), 400, "not valid JSON"),
        (as_json(chelsea, target="²"), 400, "unknown class label"),
        (as_json(chelsea, target="9" * 5000), 400, "is not an integer"),
        (as_json(chelsea, method="scorecam", channels="all"), 422, "explanation budget"),
    ]


def test_every_reproduction_gets_its_4xx_and_the_worker_survives(server, url, chelsea, photos, first_pids):
    bad = bad_requests(chelsea, photos)
    for start in range(0, len(bad), 3):  # three bad ones and a good one at a time, so they share batches
        group = bad[start : start + 3]
        responses = concurrently(url, [request for request, _, _ in group] + [raw(chelsea, method="gradcam")])
        for (_, status, message), response in zip(group, responses):
            assert response.status_code == status, (message, response.text[:300])
            error = response.json()["error"]
            assert error["code"] == status and message in error["message"], error
            assert isinstance(error["valid"], list) and error["valid"], error
        assert responses[-1].status_code == 200, responses[-1].text[:300]
    assert worker_pids(server) == first_pids
    assert max(peak_rss_gb(pid) for pid in first_pids) < 1.5
    assert post(url, raw(chelsea)).status_code == 200


def test_over_budget_names_the_cheaper_options(url, chelsea):
    error = post(url, as_json(chelsea, method="scorecam", channels="all")).json()["error"]
    assert error["code"] == 422 and "forward passes" in error["message"]
    assert any(v.startswith("channels: ") for v in error["valid"]) and any(EXACT in v for v in error["valid"])


def test_right_answers_for_16_bit_exif_alpha_and_wrapped_base64(url, chelsea, photos):
    upright = post(url, raw(chelsea)).json()
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = encoded(photos["chelsea"].transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    assert post(url, raw(turned)).json()["predictions"] == upright["predictions"]
    grey = np.asarray(photos["chelsea"].convert("L"))
    eight = post(url, raw(encoded(Image.fromarray(grey)))).json()["predictions"][0]["index"]
    assert post(url, raw(encoded(Image.fromarray(grey.astype(np.uint16) * 257)))).json()["predictions"][0]["index"] == eight
    hidden = photos["chelsea"].convert("RGBA")
    hidden.putalpha(0)
    white = post(url, raw(encoded(Image.new("RGB", hidden.size, (255, 255, 255))))).json()["predictions"]
    assert post(url, raw(encoded(hidden))).json()["predictions"] == white
    wrapped = base64.encodebytes(chelsea).decode()
    response = post(url, body(json.dumps({"image": wrapped}).encode()))
    assert response.status_code == 200 and response.json()["predictions"] == upright["predictions"]


def test_exact_score_cam_has_its_own_worker(server, url, chelsea):
    exact_url = f"{server.inference_url}/predictions/{EXACT}"
    with ThreadPoolExecutor(4) as pool:
        exact = pool.submit(post, exact_url, raw(chelsea), 600)
        quick = [pool.submit(post, url, raw(chelsea, method="none")) for _ in range(3)]
        assert all(f.result().status_code == 200 for f in quick)
        response = exact.result()
    assert response.status_code == 200, response.text[:300]
    explanation = response.json()["explanation"]
    assert explanation["method"] == "scorecam" and set(worker_pids(server, EXACT)).isdisjoint(worker_pids(server))


def test_healthcheck_is_healthy_when_every_worker_is_ready(server):
    command = [sys.executable, "-m", "whyserve.entry", "healthcheck", "--management", server.management_url]
    ready = subprocess.run([*command, "--models", f"{MODEL},{EXACT}"], capture_output=True, text=True, timeout=60)
    assert ready.returncode == 0 and "healthy" in ready.stdout, ready.stdout
    missing = subprocess.run([*command, "--models", "no_such_model"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "model no_such_model: not registered" in missing.stdout, missing.stdout
