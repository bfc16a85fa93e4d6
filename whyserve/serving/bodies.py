"""Parsing a client's body with bounds: JSON (object only, nesting bounded), base64, integers,
and multipart forms whose repeated parts a server merged away. Every error is a 400 that
names the bound."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping

import numpy as np

from whyserve.serving.errors import ServingError

MAX_JSON_DEPTH = 32
JSON_FORM = '{"image": "<base64>", "method": ...}'
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_WHITESPACE = re.compile(r"\s+")
_TYPE_NAMES = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}


def load_json_object(raw: bytes) -> dict:
    """A JSON object; its nesting is measured on the text first (no recursion, so 10^4 levels
    cost a regex pass, not a RecursionError)."""
    depth = _text_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise _too_deep(depth)
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # ValueError: also int digits limit
        raise ServingError(400, f"the body is not valid JSON ({error})", [JSON_FORM], "bad_json") from None
    return require_object(value)


def require_object(value: object) -> dict:
    """``value`` (already-decoded JSON) if it is an object within the depth bound, else 400."""
    if not isinstance(value, dict):
        what = _TYPE_NAMES.get(type(value), type(value).__name__)
        raise ServingError(400, f"a JSON body must be an object, not {what}", [JSON_FORM], "bad_json")
    depth = value_depth(value)
    if depth > MAX_JSON_DEPTH:
        raise _too_deep(depth)
    return value


def _too_deep(depth: int) -> ServingError:
    return ServingError(
        400,
        f"the JSON is nested {depth} levels deep; the limit is {MAX_JSON_DEPTH}",
        [f"at most {MAX_JSON_DEPTH} levels"],
        "bad_json",
    )


def _text_depth(raw: bytes) -> int:
    """Deepest nesting of [ and { outside strings (0 for a scalar)."""
    skeleton = np.frombuffer(_STRING.sub(b"", raw), dtype=np.uint8)
    steps = np.isin(skeleton, (ord("{"), ord("["))).astype(np.int64) - np.isin(skeleton, (ord("}"), ord("]")))
    return int(np.cumsum(steps).max(initial=0))


def value_depth(value: object) -> int:
    """Nesting of decoded JSON, counted with a stack (no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def decode_base64(text: str) -> bytes:
    """Standard base64, line breaks and spaces allowed (what the ``base64`` command prints),
    or a data URL (``data:image/png;base64,...``)."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(_WHITESPACE.sub("", text), validate=True)
    except (binascii.Error, ValueError):
        raise ServingError(400, "'image' is not valid base64", ["base64 of JPEG/PNG/WebP bytes"], "bad_json") from None


# Per part: "--" boundary CRLF, Content-Disposition/Content-Type lines, CRLF CRLF, CRLF. The
# slack allows long file names and extra part headers, so only parts above it are noticed.
PART_SLACK = 512


def check_multipart_complete(fields: Mapping[str, object], headers: Mapping[str, object]) -> None:
    """TorchServe (and any server that turns a form into a dict) keeps only the last of parts
    that share a name. The body's Content-Length then exceeds what the kept parts account
    for: a 400 saying so instead of an answer for one of several images."""
    content_type, length = _header(headers, "content-type"), _header(headers, "content-length")
    match = re.search(r"boundary=\"?([^\";]+)", content_type or "")
    if not content_type or not content_type.lower().startswith("multipart/form-data") or not match or not length:
        return
    try:
        body_length = int(length)
    except ValueError:
        return
    kept = sum(_part_size(name, value) for name, value in fields.items())
    overhead = len(fields) * (len(match.group(1)) + PART_SLACK) + len(match.group(1)) + 8
    if body_length > kept + overhead:
        raise ServingError(
            400,
            f"the multipart body has {body_length:,} bytes but its parts with distinct names account for {kept:,}:"
            " a part name (e.g. 'image') was repeated, and one image per request is allowed",
            ["one 'image' part, options as other fields"],
            "bad_request",
        )


def _part_size(name: str, value: object) -> int:
    if isinstance(value, (bytes, bytearray)):
        size = len(value)
    elif isinstance(value, str):
        size = len(value.encode())
    else:
        size = len(json.dumps(value))
    return size + len(name)


def _header(headers: Mapping[str, object], wanted: str) -> str | None:
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == wanted:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None
