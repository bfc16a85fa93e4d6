"""The demo's own API, without a browser: what it answers from whyserve, and its errors when the
inference server is unreachable (a real refused connection: nothing listens on the port)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import requests
from PIL import Image

from whyserve.data.flowers import CLASS_NAMES
from whyserve.demo import Upstream, make_server
from whyserve.demo.server import registry_name
from whyserve.photos import photo_path
from whyserve.render import colorize
from whyserve.serving.launcher import free_port


@pytest.fixture(scope="module")
def demo():
    dead = f"http://127.0.0.1:{free_port()}"
    httpd = make_server(Upstream(dead, dead, timeout=10))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_served_names_map_to_registry_models():
    assert registry_name("flowers_bcos") == "flowers_bcos"
    assert registry_name("efficientnet_lite0_onnx") == "efficientnet_lite0"
    assert registry_name("efficientnet_lite0_b8") == "efficientnet_lite0"
    assert registry_name("my_model") is None


def test_page_and_static_files(demo):
    page = requests.get(f"{demo}/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html" and 'src="demo.js"' in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere
    script = requests.get(f"{demo}/demo.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    for path in ("/../pyproject.toml", "/static/../server.py", "/server.py"):
        assert requests.get(f"{demo}{path}", timeout=10).status_code == 404, path


def test_what_the_demo_answers_from_whyserve(demo):
    assert requests.get(f"{demo}/api/classes/flowers_bcos", timeout=60).json() == list(CLASS_NAMES)
    assert len(requests.get(f"{demo}/api/classes/efficientnet_lite0_onnx", timeout=60).json()) == 1000
    assert requests.get(f"{demo}/api/classes/nope", timeout=10).status_code == 404
    lut = np.asarray(requests.get(f"{demo}/api/colormap", timeout=10).json())
    assert lut.shape == (256, 3) and (lut == colorize(np.linspace(0, 1, 256)[None])[0]).all()
    assert "chelsea" in requests.get(f"{demo}/api/photos", timeout=10).json()
    photo = requests.get(f"{demo}/api/photos/chelsea", timeout=10)
    assert photo.headers["Content-Type"] == "image/png" and photo.content == photo_path("chelsea").read_bytes()
    assert requests.get(f"{demo}/api/photos/passwd", timeout=10).status_code == 404


def test_view_is_the_pixels_the_model_sees(demo):
    view = requests.post(f"{demo}/api/view/efficientnet_lite0", data=photo_path("chelsea").read_bytes(), timeout=60)
    assert view.status_code == 200 and Image.open(io.BytesIO(view.content)).size == (224, 224)
    bad = requests.post(f"{demo}/api/view/efficientnet_lite0", data=b"not a photo", timeout=60)
    assert bad.status_code == 400 and "not an image" in bad.json()["error"]["message"]


def test_an_unreachable_server_is_named(demo):
    models = requests.get(f"{demo}/api/models", timeout=30)
    assert models.status_code == 502 and "cannot be reached" in models.json()["error"]["message"]
    explain = requests.post(f"{demo}/api/explain/efficientnet_lite0", data=b"x", timeout=30)
    assert explain.status_code == 502 and "inference server at http://127.0.0.1:" in explain.json()["error"]["message"]
    assert requests.post(f"{demo}/api/nothing/x", data=b"x", timeout=10).status_code == 404
