"""``whyserve demo``: the web page (static files in ``static/``) served on 127.0.0.1, and a small
API beside it that forwards explanations to the inference server.

Forwarding keeps the page on one origin (no CORS setting on TorchServe) and the tokens in this
process: the page never sees them. What the demo answers itself comes from whyserve: the served
models (management API), each model's methods (the server's own list, see ``served_methods``),
its class names (the model registry), the bundled photos, the colormap of the overlays, and the
pixels the model sees (``ModelSpec.view``), so that the page can draw the heatmap over them.
"""

from __future__ import annotations

import functools
import json
import mimetypes
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import numpy as np

from whyserve.client import error_from_body

STATIC = ("index.html", "demo.css", "demo.js")
MAX_UPLOAD = 20 * 1024 * 1024  # bytes the demo accepts from the page (TorchServe's own limit is lower)
_PROBE_METHOD = "?"  # no model serves it: the 400 answer lists the methods the model does serve


@dataclass(frozen=True)
class Upstream:
    """Where the demo forwards to, and with which keys (None: token auth off)."""

    url: str  # inference API base, e.g. http://127.0.0.1:8080
    management: str | None = None
    token: str | None = None
    management_token: str | None = None
    timeout: float = 300.0

    def request(
        self, url: str, token: str | None, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, bytes, str]:
        """(status, body, content type) of one call; HTTP errors are answers too."""
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read(), response.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as error:
            return error.code, error.read(), error.headers.get("Content-Type", "application/json")

    def models(self) -> list[str]:
        if not self.management:
            raise LookupError("no management API given (whyserve demo --management URL)")
        status, body, _ = self.request(f"{self.management}/models?limit=1000", self.management_token)
        if status != 200:
            raise error_from_body(status, body)
        return [m["modelName"] for m in json.loads(body).get("models", [])]

    def served_methods(self, model: str) -> list[str]:
        """The methods ``model`` serves, as its server says: a request naming an unknown method is
        refused with the valid ones (options are checked before any image is decoded)."""
        headers = {"Content-Type": "application/octet-stream", "X-Explain-Method": _PROBE_METHOD}
        status, body, _ = self.request(self.predictions(model), self.token, b"\0", headers)
        error = error_from_body(status, body)
        if status != 400 or not error.valid:
            raise LookupError(f"model {model!r} did not list its methods ({error})")
        return [m for m in error.valid if m != "none"]

    def predictions(self, model: str) -> str:
        return f"{self.url}/predictions/{urllib.parse.quote(model, safe='')}"


def registry_name(served: str) -> str | None:
    """The registry model behind a served name: the name itself (``flowers_bcos``), else the
    longest registered name it starts with (``efficientnet_lite0_onnx`` -> ``efficientnet_lite0``)."""
    from whyserve.models import available_models

    names = available_models()
    if served in names:
        return served
    prefixes = [n for n in names if served.startswith(f"{n}_")]
    return max(prefixes, key=len) if prefixes else None


@functools.lru_cache(maxsize=8)
def model_spec(served: str):
    from whyserve.models import load_model

    name = registry_name(served)
    return None if name is None else load_model(name)


def colormap() -> list[list[int]]:
    """The overlays' colormap as 256 RGB triples, so the page colours maps like the server."""
    from whyserve.render import colorize

    return colorize(np.linspace(0.0, 1.0, 256)[None])[0].tolist()


def describe_models(upstream: Upstream) -> list[dict]:
    """Each served model with its methods, and what whyserve's method registry says of them."""
    from whyserve.methods import REGISTRY

    described = []
    for name in upstream.models():
        try:
            methods, problem = upstream.served_methods(name), None
        except (LookupError, OSError) as error:
            methods, problem = [], str(error)
        known = [REGISTRY[m] for m in methods if m in REGISTRY]
        described.append(
            {
                "name": name,
                "methods": methods,
                "contrast_methods": [m.name for m in known if m.takes_contrast],
                "omitted_contrast": {m.name: m.omitted_contrast for m in known if m.takes_contrast},
                "help": {m.name: m.help for m in known},
                "problem": problem,
            }
        )
    return described


def view_png(served: str, data: bytes) -> bytes:
    """The pixels ``served`` sees of this image (resized and cropped), as PNG."""
    from whyserve.render import encode
    from whyserve.serving.protocol import decode_image

    spec = model_spec(served)
    if spec is None:
        raise LookupError(f"no registry model behind {served!r}")
    return encode(spec.view(decode_image(data)))


class DemoHandler(BaseHTTPRequestHandler):
    """GET: the page, ``/api/models``, ``/api/classes/<model>``, ``/api/photos[/<name>]``,
    ``/api/colormap``; POST: ``/api/explain/<model>`` (forwarded as it is), ``/api/view/<model>``."""

    upstream: Upstream  # set on the subclass made by ``make_server``
    server_version = "whyserve-demo"

    def do_GET(self) -> None:
        path = urllib.parse.urlparse(self.path).path
        route, _, arg = path.lstrip("/").removeprefix("api/").partition("/")
        arg = urllib.parse.unquote(arg)
        if path in ("/", "/index.html") or path.lstrip("/") in STATIC:
            self._static(path.lstrip("/") or "index.html")
        elif not path.startswith("/api/"):
            self._error(404, f"no page {path}", ["/"])
        elif route == "models":
            self._json_call(lambda: describe_models(self.upstream))
        elif route == "classes":
            self._json_call(lambda: _classes(arg))
        elif route == "colormap":
            self._json_call(colormap)
        elif route == "photos" and not arg:
            self._json_call(_photo_names)
        elif route == "photos":
            self._photo(arg)
        else:
            self._error(404, f"no API {path}", ["/api/models", "/api/classes/<model>", "/api/photos", "/api/colormap"])

    def do_POST(self) -> None:
        route, _, model = urllib.parse.urlparse(self.path).path.removeprefix("/api/").partition("/")
        model = urllib.parse.unquote(model)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD:
            limit = f"at most {MAX_UPLOAD:,} bytes"
            self._error(413, f"the upload has {length:,} bytes; the demo takes {limit}", [limit])
            return
        body = self.rfile.read(length)
        if route == "explain" and model:
            self._forward(model, body)
        elif route == "view" and model:
            self._view(model, body)
        else:
            self._error(404, f"no API {self.path}", ["/api/explain/<model>", "/api/view/<model>"])

    def _forward(self, model: str, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() == "content-type" or k.lower().startswith("x-explain-")}
        try:
            upstream = self.upstream
            status, answer, content_type = upstream.request(upstream.predictions(model), upstream.token, body, headers)
        except OSError as error:
            self._error(502, f"the inference server at {self.upstream.url} cannot be reached: {error}", [])
            return
        self._send(status, answer, content_type)

    def _view(self, model: str, body: bytes) -> None:
        from whyserve.serving.protocol import ServingError

        try:
            self._send(200, view_png(model, body), "image/png")
        except ServingError as error:
            self._error(error.status, error.message, error.valid)
        except LookupError as error:
            self._error(404, str(error), [])

    def _static(self, name: str) -> None:
        data = resources.files("whyserve.demo").joinpath("static", name).read_bytes()
        self._send(200, data, mimetypes.guess_type(name)[0] or "application/octet-stream")

    def _photo(self, name: str) -> None:
        from whyserve.photos import available_photos, photo_path

        if name not in available_photos():
            self._error(404, f"no bundled photo {name!r}", available_photos())
            return
        try:
            path = photo_path(name)
            self._send(200, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        except FileNotFoundError as error:
            self._error(404, str(error), [])

    def _json_call(self, make) -> None:
        try:
            value = make()
        except LookupError as error:
            self._error(404, str(error), [])
            return
        except OSError as error:
            self._error(502, f"the server cannot be reached: {error}", [])
            return
        except Exception as error:  # noqa: BLE001 - e.g. ServerError: the page shows the server's words
            self._error(getattr(error, "status", 500), str(error), getattr(error, "valid", []))
            return
        self._send(200, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, message: str, valid: list) -> None:
        body = {"error": {"code": status, "message": message, "valid": [str(v) for v in valid]}}
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass  # quiet: the page is the interface


def _classes(served: str) -> list[str]:
    spec = model_spec(served)
    if spec is None:
        raise LookupError(f"no registry model behind {served!r}: no class names to suggest")
    return list(spec.class_names or ())


def _photo_names() -> list[str]:
    from whyserve.photos import available_photos

    return available_photos()


def make_server(upstream: Upstream, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """The demo's HTTP server (not yet serving: call ``serve_forever``); port 0 = a free one."""
    handler = type("BoundDemoHandler", (DemoHandler,), {"upstream": upstream})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def read_token_file(path: str | Path) -> tuple[str | None, str | None]:
    """(inference, management) keys from TorchServe's key_file.json."""
    keys = json.loads(Path(path).read_text())
    return keys.get("inference", {}).get("key"), keys.get("management", {}).get("key")
