"""The HTTP protocol of DESIGN.md, free of any serving framework.

A request arrives as *fields* (the body, or the parts of a multipart form) and *headers*;
``parse_payload`` turns them into image bytes and raw options, ``parse_options`` into the
engine's ``ExplainRequest`` and the response's ``ServeOptions`` (with the model's
``RequestDefaults``); ``whyserve.serving.images.decode_image`` (re-exported here) turns the
bytes into a PIL image. ``build_response`` and ``error_body`` make the JSON the client gets.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from whyserve.engine import ExplainRequest
from whyserve.errors import InvalidOption
from whyserve.methods import Output, OutputKind, all_methods, get_method
from whyserve.methods.registry import requirement_of
from whyserve.options import parse_number
from whyserve.render import encode, heatmap_image, overlay
from whyserve.serving.bodies import check_multipart_complete, decode_base64, load_json_object, require_object
from whyserve.serving.errors import ServingError, error_body
from whyserve.serving.images import DEFAULT_MAX_PIXELS, IMAGE_FORMATS, decode_image

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_FORMATS", "ServingError", "decode_image", "error_body"]  # re-exported

HEADER_PREFIX = "x-explain-"
NO_EXPLANATION = "none"
CORE_OUTPUTS = ("heatmap", "overlay", "values")  # every method's; a method declares its own (Method.outputs)
MAX_TOPK = 100


@dataclass(frozen=True)
class ServeOptions:
    """What a request asks of the response, beyond the engine request."""

    topk: int = 5
    outputs: tuple[str, ...] = ("heatmap",)


# -- request parsing ------------------------------------------------------------------------


def header_options(headers: Mapping[str, object]) -> dict[str, str]:
    """``X-Explain-Method: gradcam`` -> ``{"method": "gradcam"}`` (header names case-insensitive)."""
    options = {}
    for name, value in headers.items():
        if isinstance(name, str) and name.lower().startswith(HEADER_PREFIX) and isinstance(value, str):
            options[name[len(HEADER_PREFIX) :].lower().replace("-", "_")] = value.strip()
    return options


def parse_payload(fields: Mapping[str, object], headers: Mapping[str, object] | None = None) -> tuple[bytes, dict]:
    """Image bytes and raw options from one request.

    ``fields``: ``{"body": ...}`` (or ``"data"``) for a plain body, already-parsed JSON
    (a dict) allowed; ``{"image": ..., "method": ..., ...}`` for multipart/form-data.
    Options from ``X-Explain-*`` headers come first; options in the body override them.
    """
    options = header_options(headers or {})
    if "image" in fields:  # multipart/form-data
        check_multipart_complete(fields, headers or {})
        if isinstance(fields["image"], (list, tuple)):  # a server that keeps repeated parts
            raise ServingError(400, f"the form has {len(fields['image'])} 'image' parts; one image per request", _REQUEST_FORMS)
        for name, value in fields.items():
            if name != "image":
                options[name] = _text(value, name)
        return _as_bytes(fields["image"]), options

    body = fields.get("body")
    if body is None:
        body = fields.get("data")
    if isinstance(body, (bytes, bytearray)) and _looks_like_json(body, headers):
        body = load_json_object(bytes(body))
    if isinstance(body, str):
        body = _json_text(body, headers)
    if not isinstance(body, (bytes, bytearray, str)) and body is not None:  # JSON the server decoded
        body = require_object(body)
        options.update({k: v for k, v in body.items() if k != "image"})
        return _image_from_json(body), options
    if body is None:
        named = f" (form fields: {', '.join(sorted(map(str, fields)))})" if fields else ""
        raise ServingError(
            400,
            f"the request has no image{named}; raw bytes need an image/* or application/octet-stream Content-Type",
            _REQUEST_FORMS,
            "empty_body",
        )
    if not body:
        raise ServingError(400, "the request has no image: the body is empty", _REQUEST_FORMS, "empty_body")
    return bytes(body), options


_REQUEST_FORMS = [
    "raw JPEG/PNG/WebP bytes with X-Explain-* headers",
    'JSON {"image": "<base64>", "method": ...}',
    "multipart/form-data with an 'image' file field",
]


def _looks_like_json(body: bytes, headers: Mapping[str, object] | None) -> bool:
    content_type = _content_type(headers)
    return content_type.startswith("application/json") or body.lstrip()[:1] in (b"{", b"[")


def _json_text(body: str, headers: Mapping[str, object] | None) -> dict | bytes:
    """A str body: JSON text, or (with a JSON Content-Type) a JSON string the server decoded."""
    if _looks_like_json(body.encode(), headers):
        if body.lstrip()[:1] in ("{", "["):
            return load_json_object(body.encode())
        raise ServingError(
            400, "a JSON body must be an object, not a string", ['{"image": "<base64>", "method": ...}'], "bad_json"
        )
    return body.encode()


def _content_type(headers: Mapping[str, object] | None) -> str:
    for name, value in (headers or {}).items():
        if isinstance(name, str) and name.lower() == "content-type" and isinstance(value, str):
            return value.lower()
    body_headers = (headers or {}).get("body")
    if isinstance(body_headers, Mapping):
        return str(body_headers.get("content-type", "")).lower()
    return ""


def _image_from_json(body: dict) -> bytes:
    image = body.get("image")
    if image is None:
        raise ServingError(
            400, "the JSON body has no 'image' field", ['{"image": "<base64 of JPEG/PNG/WebP bytes>"}'], "bad_json"
        )
    if not isinstance(image, str):
        raise ServingError(400, "'image' must be a base64 string", ["base64 of JPEG/PNG/WebP bytes"], "bad_json")
    return decode_base64(image)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("latin-1", errors="replace")
    raise ServingError(400, "the 'image' field must be a file", _REQUEST_FORMS, "bad_request")


def _text(value: object, name: str) -> object:
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ServingError(400, f"option {name!r} is not UTF-8 text", option_names(), "bad_option") from None
    return value


# -- options ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestDefaults:
    """A model's defaults for what a request leaves out, built once from its serving config.
    ``method_options``: per method name, raw option values (e.g. Score-CAM's ``channels``)."""

    method: str = "gradcam"
    methods: tuple[str, ...] = ("gradcam", "contrastive", "scorecam")
    topk: int = 5
    method_options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    why_not: Mapping[str, str] = field(default_factory=dict)  # "; <why>" per method the backend cannot run


def option_names() -> tuple[str, ...]:
    """Every option a request may carry: the common ones and each registered method's own."""
    own = [name for m in all_methods() for name in m.option_names]
    return ("method", "target", "contrast", *dict.fromkeys(own), "topk", "outputs")


def parse_options(raw: Mapping[str, object], defaults: RequestDefaults) -> tuple[ExplainRequest | None, ServeOptions]:
    """The engine request (None: prediction only) and the response options; raises
    ``ServingError`` 400 naming the option and what is valid. Whether the method takes the
    contrast and the options, and their values, are checked once, by ``Explainer.resolve``."""
    names = option_names()
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ServingError(400, f"unknown option {unknown[0]!r}", names, "bad_option")
    options = {k: v for k, v in raw.items() if v is not None and v != ""}
    method = _method(options.get("method", defaults.method), defaults)
    target = _class_option(options.get("target"), "target")
    contrast = _contrast_option(options.get("contrast"))
    serve = ServeOptions(_topk(options.get("topk", defaults.topk)), _outputs(options.get("outputs", "heatmap"), method))
    if method == NO_EXPLANATION:
        return None, serve
    own = {k: v for k, v in options.items() if k not in ("method", "target", "contrast", "topk", "outputs")}
    return ExplainRequest(method, target, contrast, **{**defaults.method_options.get(method, {}), **own}), serve


def _method(method: object, defaults: RequestDefaults) -> str:
    valid = (*defaults.methods, NO_EXPLANATION)
    if not isinstance(method, str) or method.strip().lower() not in valid:
        why = requirement_of(method) + (defaults.why_not.get(method.strip().lower(), "") if isinstance(method, str) else "")
        raise ServingError(400, f"method {method!r} is not supported by this model{why}", valid, "bad_option")
    return method.strip().lower()


def _topk(topk: object) -> int:
    return _number(topk, "topk", 1, MAX_TOPK)


def _number(value: object, name: str, low: int, high: int) -> int:
    try:
        return int(parse_number(name, value, True, low, high))
    except InvalidOption as error:
        raise ServingError(400, str(error), error.valid, "bad_option") from None


def known_outputs() -> tuple[str, ...]:
    """Every output a request may name: the core ones, then each registered method's own."""
    own = (name for m in all_methods() for name, output in m.outputs.items() if not output.always)
    return (*CORE_OUTPUTS, *dict.fromkeys(own))


def _outputs(value: object, method: str) -> tuple[str, ...]:
    outputs = [o.strip().lower() for o in value.split(",") if o.strip()] if isinstance(value, str) else value
    known = known_outputs()
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) and o in known for o in outputs):
        raise ServingError(400, f"outputs: {value!r} is not a list of known outputs", known, "bad_option")
    if method != NO_EXPLANATION:
        valid = (*CORE_OUTPUTS, *(name for name, o in get_method(method).outputs.items() if not o.always))
        other = [o for o in outputs if o not in valid]
        if other:
            raise ServingError(400, f"outputs: method {method!r} does not make {other[0]}", valid, "bad_option")
    return tuple(dict.fromkeys(outputs))


def _contrast_option(value: object) -> int | str | float | None:
    """A class index or label, or (a JSON number) a regression model's contrast value; the
    explainer checks it against the model (a classifier refuses a value, a regressor a label)."""
    if isinstance(value, float):
        return value
    return _class_option(value, "contrast")


def _class_option(value: object, name: str) -> int | str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        valid = ["a class index", "a class label", *(["a number (regression models)"] if name == "contrast" else [])]
        raise ServingError(400, f"{name}: {value!r} is not a class index or label", valid, "bad_option")
    digits = value.strip().lstrip("+-") if isinstance(value, str) else ""
    if isinstance(value, int) or (digits.isdigit() and digits.isascii()):
        return _number(value, name, -(10**9), 10**9)  # range checked against the model's classes later
    return value


# -- responses -------------------------------------------------------------------------------


def _class(index: int | float | None, class_names: tuple[str, ...] | None) -> dict | None:
    if index is None:
        return None
    if isinstance(index, float):  # regression contrast value
        return {"value": index}
    return {"index": int(index), "label": class_names[index] if class_names else str(index)}


def build_response(
    predictions: list[dict],
    explanation,
    options: ServeOptions,
    class_names: tuple[str, ...] | None,
    view: Image.Image | None = None,
    backend: str | None = None,
) -> dict:
    """The response object of DESIGN.md; ``explanation`` is a ``whyserve.Explanation`` or None.
    ``backend`` says what ran it, e.g. ``torch:cpu`` or ``onnxruntime:CUDAExecutionProvider``."""
    if explanation is None:
        return {"predictions": predictions, "explanation": None}
    body: dict = {
        "method": explanation.method,
        "target": _class(explanation.target, class_names),
        "contrast": _class(explanation.contrast, class_names),
        "layer": explanation.layer,
    }
    if backend is not None:
        body["backend"] = backend
    for output in (o for o in CORE_OUTPUTS if o in options.outputs):  # a fixed order in the JSON
        value = _CORE_BUILDERS[output](explanation, view)
        if value is not None:
            body[output] = value
    declared = get_method(explanation.method).outputs
    for name, output in declared.items():
        if name in options.outputs and name in explanation.artifacts:
            body[name] = _artifact(explanation.artifacts[name], output)
    if explanation.details:
        body["details"] = dict(explanation.details)
    for name, output in declared.items():  # what the method always shows (VEBI: its features)
        if output.always and name in explanation.artifacts:
            body[name] = _artifact(explanation.artifacts[name], output)
    body["timing_ms"] = {k: round(float(v), 2) for k, v in explanation.timing_ms.items()}
    return {"predictions": predictions, "explanation": body}


def _picture(picture: Image.Image, fmt: str = "PNG", **save: object) -> dict:
    encoding = "jpeg;base64" if fmt == "JPEG" else "png;base64"
    data = base64.b64encode(encode(picture, fmt, **save)).decode("ascii")
    return {"encoding": encoding, "width": picture.width, "height": picture.height, "data": data}


def _heatmap(explanation, view: Image.Image | None) -> dict:
    # compress_level 1: ~10x cheaper than PIL's default 6 on a 224 px map (benchmarks/request_breakdown.py)
    return _picture(heatmap_image(explanation.heatmap), compress_level=1)


def _overlay(explanation, view: Image.Image | None) -> dict | None:
    return None if view is None else _picture(overlay(view, explanation.heatmap), "JPEG", quality=85)


def _values(explanation, view: Image.Image | None) -> dict:
    return _numbers(explanation.layer_heatmap, 4)


def _numbers(array: object, decimals: int) -> dict:
    values = np.asarray(array, dtype=np.float32)
    return {"width": int(values.shape[1]), "height": int(values.shape[0]), "data": np.round(values, decimals).tolist()}


def _artifact(value: object, output: Output) -> object:
    """A method's own output, rendered by its kind."""
    if output.kind is OutputKind.IMAGE:
        pixels = np.asarray(value)
        if pixels.dtype != np.uint8:  # floats in [0, 1]
            pixels = (np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8)
        return _picture(Image.fromarray(pixels, "RGBA" if pixels.shape[-1] == 4 else "RGB"))
    if output.kind is OutputKind.ARRAY:
        return _numbers(value, output.decimals)
    return value


_CORE_BUILDERS = {"heatmap": _heatmap, "overlay": _overlay, "values": _values}
