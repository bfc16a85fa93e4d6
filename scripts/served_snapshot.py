#!/usr/bin/env python
"""Record (or compare) the served JSON of a fixed set of mixed requests, timings removed.

    .venv/bin/python scripts/served_snapshot.py record /tmp/before.json
    .venv/bin/python scripts/served_snapshot.py compare /tmp/before.json

Every archive's model-config.yaml ``handler`` section builds an in-process ``ExplainService``
(the layer under the TorchServe adapter); the ONNX archive gets a freshly exported .onnx. The
requests cover every method, model and encoding (raw bytes + headers, JSON, multipart), and a
few errors. Used to show that a refactoring leaves the served answers unchanged.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archives.build import available, handler_settings  # noqa: E402
from whyserve.data.flowers import generate  # noqa: E402
from whyserve.photos import photo_path  # noqa: E402
from whyserve.serving.service import ExplainService, ServingConfig  # noqa: E402


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _raw(data: bytes, **options: str) -> tuple[dict, dict]:
    return {"body": data}, {f"X-Explain-{k.capitalize()}": str(v) for k, v in options.items()}


def _json(data: bytes, **options: object) -> tuple[dict, dict]:
    return {"body": json.dumps({"image": base64.b64encode(data).decode(), **options}).encode()}, {
        "Content-Type": "application/json"
    }


def _form(data: bytes, **options: object) -> tuple[dict, dict]:
    return {"image": data, **{k: str(v).encode() for k, v in options.items()}}, {}


def requests(cat: bytes, coffee: bytes, flower: bytes) -> list[tuple[str, tuple[dict, dict]]]:
    return [
        ("efficientnet_lite0", _raw(cat)),
        ("efficientnet_lite0", _raw(cat, method="contrastive", contrast="Egyptian cat", outputs="heatmap,values")),
        ("efficientnet_lite0", _json(coffee, method="scorecam", channels=16, topk=3)),
        ("efficientnet_lite0", _form(cat, method="scorecam", weighting="channel_softmax", channels=8, target="tiger cat")),
        ("efficientnet_lite0", _json(cat, method="contrastive", outputs=["overlay"])),
        ("efficientnet_lite0", _form(coffee, method="none", topk=2)),
        ("efficientnet_lite0", _raw(cat, method="contrastive", target=285, contrast="Egyptian cat")),
        ("efficientnet_lite0", _json(cat, method="gradcam", weighting="probability")),
        ("efficientnet_lite0_onnx", _raw(cat)),
        ("efficientnet_lite0_onnx", _json(coffee, method="scorecam", channels=8, weighting="channel_softmax", outputs="values")),
        ("efficientnet_lite0_onnx", _form(cat, method="gradcam")),
        ("flowers_cnn", _raw(flower)),
        ("flowers_cnn", _json(flower, method="scorecam", outputs="heatmap,values")),
        ("flowers_cnn", _form(flower, method="contrastive", contrast=1, target=0)),
        ("flowers_cnn", _raw(flower, method="bcos")),
        ("flowers_bcos", _raw(flower, outputs="heatmap,bcos_color,values")),
        ("flowers_bcos", _json(flower, method="bcos", contrast=2)),
        ("flowers_bcos", _form(flower, method="gradcam", target=3)),
        ("flowers_bcos", _raw(flower, method="scorecam", channels=8)),
        ("flowers_bcos", _json(flower, method="bcos", target=1, contrast=1)),
        # errors and edge cases the option and output validation decides
        ("flowers_cnn", _raw(flower, method="gradcam", outputs="bcos_color")),
        ("flowers_cnn", _json(flower, method="scorecam", channels=0)),
        ("flowers_cnn", _json(flower, method="scorecam", channels="many")),
        ("flowers_cnn", _json(flower, method="gradcam", channels=8)),
        ("flowers_cnn", _json(flower, method="contrastive", target=1, contrast=1)),
        ("flowers_cnn", _json(flower, method="contrastive", contrast=99)),
        ("flowers_cnn", _json(flower, method="fgvis", steps=3)),
        ("flowers_cnn", _json(flower, method="fgvis", steps=0)),
        ("flowers_cnn", _json(flower, method="vebi")),
        ("flowers_cnn", _json(flower, method="scorecam", weighting="nope")),
        ("efficientnet_lite0", _json(cat, method="gradcam", topk=0)),
        ("efficientnet_lite0", _json(cat, method="gradcam", layer="nope")),
    ]


def _services(onnx_dir: Path) -> dict[str, ExplainService]:
    services = {}
    for archive in available():
        settings = handler_settings(archive, onnx_dir)
        settings["torch_threads"] = None
        settings["explain_budget_s"] = None  # calibrated against the machine's current load: not a reply's to record
        services[archive] = ExplainService(ServingConfig.from_dict(settings))
    return services


def _strip(body: object) -> object:
    if isinstance(body, dict):
        return {k: _strip(v) for k, v in body.items() if k != "timing_ms"}
    if isinstance(body, list):
        return [_strip(v) for v in body]
    return body


def snapshot() -> list[dict]:
    cat = _png(Image.open(photo_path("chelsea")).convert("RGB"))
    coffee = _png(Image.open(photo_path("coffee")).convert("RGB"))
    flower = _png(Image.fromarray(generate(1, seed=7)[0].image))
    with tempfile.TemporaryDirectory() as tmp:
        services = _services(Path(tmp))
        out = []
        for model, request in requests(cat, coffee, flower):
            reply = services[model].handle([request])[0]
            out.append({"model": model, "status": reply.status, "body": _strip(reply.body)})
        # the same requests as one batch per model: batching must not change an answer
        for model, service in services.items():
            batch = [r for m, r in requests(cat, coffee, flower) if m == model]
            for reply in service.handle(batch):
                out.append({"model": model + " (batch)", "status": reply.status, "body": _strip(reply.body)})
    return out


def _gap(a: object, b: object) -> float:
    """The largest difference between two replies: numbers, and pixels of base64 images."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        if "data" in a and isinstance(a["data"], str) and a.get("encoding", "").endswith("base64"):
            pixels = [np.asarray(Image.open(io.BytesIO(base64.b64decode(d["data"]))), dtype=float) for d in (a, b)]
            return float(np.abs(pixels[0] - pixels[1]).max()) if pixels[0].shape == pixels[1].shape else float("inf")
        return max((_gap(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return max((_gap(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b)
    return 0.0 if a == b else float("inf")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "compare"):
        print(__doc__, file=sys.stderr)
        return 2
    current = snapshot()
    path = Path(argv[1])
    if argv[0] == "record":
        path.write_text(json.dumps(current, indent=1))
        print(f"recorded {len(current)} replies to {path}")
        return 0
    before = json.loads(path.read_text())
    differ = [i for i, (a, b) in enumerate(zip(before, current)) if a != b]
    if len(before) != len(current):
        differ.append(-1)
    for i in differ:
        if i >= 0:
            gap = _gap(before[i], current[i])
            print(f"reply {i} ({current[i]['model']}) differs: largest difference {gap} (numbers; PNG/JPEG pixels out of 255)")
            for label, reply in (("  before", before[i]), ("  now   ", current[i])):
                if "error" in reply["body"]:  # an error's wording: worth reading side by side
                    print(f"{label} {reply['status']} {json.dumps(reply['body']['error'])}")
    print(f"{len(current)} replies, {len(current) - len(differ)} identical, {len(differ)} different")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
