"""A Python client of whyserve's HTTP protocol (DESIGN.md): standard library, NumPy and Pillow only.

    from whyserve.client import Client
    result = Client("http://127.0.0.1:8080", model="efficientnet_lite0").explain("cat.jpg", method="gradcam")
    result.top.label, result.heatmap, result.overlay   # 'tiger cat', (224, 224) float32 in [0, 1], PIL image

An image is a path, a bundled photo's name (``whyserve.photos``), bytes, a PIL image or a NumPy
array (H x W, H x W x 3 or H x W x 4; uint8, or floats in [0, 1]); arrays and PIL images travel
as PNG. The request is multipart/form-data (the image as a file, no base64 inflation) unless
``encoding="json"``. A 4xx/5xx answer raises ``ServerError`` with the server's code, message and
valid values.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ImageInput = str | Path | bytes | bytearray | memoryview | Image.Image | np.ndarray
ENCODINGS = ("multipart", "json")


class ServerError(Exception):
    """The server refused the request: HTTP ``status``, and the protocol's ``code``, ``message``
    and ``valid`` (what would have been accepted) when the body is whyserve's error JSON."""

    def __init__(self, status: int, message: str, valid: list[str] | None = None, code: int | None = None) -> None:
        self.status = status
        self.code = status if code is None else code
        self.message = message
        self.valid = list(valid or [])
        hint = f" (valid: {', '.join(self.valid)})" if self.valid else ""
        super().__init__(f"HTTP {status}: {message}{hint}")


@dataclass(frozen=True)
class Prediction:
    """A class and its probability, or (regression models) an output and its ``value``."""

    index: int
    label: str
    probability: float | None
    value: float | None = None


@dataclass
class ExplainResult:
    """One answer. ``heatmap``: float32 in [0, 1] at the model's input size; ``overlay`` and
    ``bcos_color``: PIL images; ``values``: the layer-resolution map. None when not asked for
    (``outputs``) or when ``method="none"``. ``raw``: the JSON as received."""

    predictions: list[Prediction]
    method: str | None
    target: dict | None
    contrast: dict | None
    layer: str | None
    backend: str | None
    timing_ms: dict[str, float]
    heatmap: np.ndarray | None = None
    overlay: Image.Image | None = None
    values: np.ndarray | None = None
    bcos_color: Image.Image | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def top(self) -> Prediction:
        return self.predictions[0]

    @property
    def question(self) -> str | None:
        """The question the map answers: "why tiger cat, rather than Egyptian cat?" (a regression
        model's: "why 0.58, rather than 0.75?")."""
        if self.target is None:
            return None
        value = self.top.value if self.predictions else None
        text = f"why {_name(self.target) if value is None else f'{value:.3g}'}"
        return text + (f", rather than {_name(self.contrast)}?" if self.contrast else "?")

    @classmethod
    def from_json(cls, body: dict) -> ExplainResult:
        predictions = [
            Prediction(int(p["index"]), str(p["label"]), _number(p.get("probability")), _number(p.get("value")))
            for p in body["predictions"]
        ]
        explanation = body.get("explanation") or {}
        values = explanation.get("values")
        return cls(
            predictions=predictions,
            method=explanation.get("method"),
            target=explanation.get("target"),
            contrast=explanation.get("contrast"),
            layer=explanation.get("layer"),
            backend=explanation.get("backend"),
            timing_ms=dict(explanation.get("timing_ms") or {}),
            heatmap=_heatmap(explanation.get("heatmap")),
            overlay=_picture(explanation.get("overlay")),
            values=None if values is None else np.asarray(values["data"], dtype=np.float32),
            bcos_color=_picture(explanation.get("bcos_color")),
            raw=body,
        )


class Client:
    """``url``: a model's prediction URL (``http://host:8080/predictions/NAME``), or the server's
    base URL with ``model``. ``token``: the inference key when token auth is on.
    ``management``: the management API's base URL (for ``models``), ``management_token`` its key."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 300.0,
        model: str | None = None,
        management: str | None = None,
        management_token: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.model = model
        self.management = management.rstrip("/") if management else None
        self.management_token = management_token

    def endpoint(self, model: str | None = None) -> str:
        model = model or self.model
        return f"{self.url}/predictions/{urllib.parse.quote(model)}" if model else self.url

    def explain(
        self,
        image: ImageInput,
        method: str | None = None,
        target: int | str | None = None,
        contrast: int | str | float | None = None,
        outputs: str | list[str] | tuple[str, ...] = ("heatmap", "overlay"),
        *,
        model: str | None = None,
        encoding: str = "multipart",
        **options: object,
    ) -> ExplainResult:
        """Predict and explain ``image``. Further ``options`` (``topk``, ``weighting``,
        ``channels``, ...) go to the server as they are; None means "the model's default"."""
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding {encoding!r}; valid: {', '.join(ENCODINGS)}")
        if not isinstance(outputs, str):
            outputs = ",".join(outputs)
        fields = dict(method=method, target=target, contrast=contrast, outputs=outputs, **options)
        fields = {k: v for k, v in fields.items() if v is not None}
        data = image_bytes(image)
        if encoding == "json":
            body = json.dumps({"image": base64.b64encode(data).decode("ascii"), **fields}).encode()
            content_type = "application/json"
        else:
            body, content_type = multipart(data, {k: str(v) for k, v in fields.items()})
        answer = self._call(self.endpoint(model), self.token, body, content_type)
        return ExplainResult.from_json(answer)

    def models(self) -> list[str]:
        """Names of the served models (management API ``GET /models``, every page)."""
        if not self.management:
            raise ValueError("models() needs the management API's URL: Client(..., management='http://host:8081')")
        names, token = [], ""
        while True:
            query = f"?limit=100&next_page_token={token}" if token else "?limit=100"
            listed = self._call(f"{self.management}/models{query}", self.management_token)
            names += [m["modelName"] for m in listed.get("models", [])]
            token = listed.get("nextPageToken") or ""
            if not token:
                return names

    def _call(self, url: str, token: str | None, body: bytes | None = None, content_type: str | None = None) -> dict:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise error_from_body(error.code, error.read()) from None


def error_from_body(status: int, body: bytes) -> ServerError:
    """whyserve's ``{"error": {code, message, valid}}``, or TorchServe's own ``{code, type, message}``,
    or plain text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return ServerError(status, text or "no message")
    detail = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(detail, dict):
        valid = [str(v) for v in detail.get("valid") or []]
        return ServerError(status, str(detail.get("message", text)), valid, detail.get("code"))
    if isinstance(parsed, dict) and "message" in parsed:
        return ServerError(status, str(parsed["message"]))
    return ServerError(status, text)


def image_bytes(image: ImageInput) -> bytes:
    """The bytes to send for any accepted image input (see the module's docstring)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.exists():
            from whyserve.photos import available_photos, photo_path

            if str(image) not in available_photos():
                raise FileNotFoundError(f"{image}: no such file, nor a bundled photo ({', '.join(available_photos())})")
            path = photo_path(str(image))
        return path.read_bytes()
    if isinstance(image, np.ndarray):
        image = _array_image(image)
    if isinstance(image, Image.Image):
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise TypeError(f"cannot send a {type(image).__name__}; give a path, bytes, a PIL image or a NumPy array")


def _array_image(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image array is H x W, H x W x 3 or H x W x 4, not {array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating) or array.min() < 0 or array.max() > 1:
            raise ValueError(f"an image array is uint8, or floats in [0, 1]; got {array.dtype} in [{array.min()}, {array.max()}]")
        array = (array * 255).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def multipart(image: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body with an ``image`` file part and one part per field."""
    boundary = f"whyserve-{uuid.uuid4().hex}"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image"\r\n'
    parts.append(f"{head}Content-Type: application/octet-stream\r\n\r\n".encode() + image + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _number(value: object) -> float | None:
    return None if value is None else float(value)


def _name(cls: dict) -> str:
    return str(cls.get("label", cls.get("value", cls.get("index"))))


def _picture(stated: dict | None) -> Image.Image | None:
    if not stated:
        return None
    picture = Image.open(io.BytesIO(base64.b64decode(stated["data"])))
    picture.load()
    return picture


def _heatmap(stated: dict | None) -> np.ndarray | None:
    picture = _picture(stated)
    return None if picture is None else np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
