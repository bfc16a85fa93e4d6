"""KServe v1/v2 request bodies and the comparison with whyserve's own protocol, shared by the
TorchServe-envelope tests and the KServe-native runtime tests."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from whyserve.serving.envelopes import Output, v2_response
from whyserve.serving.service import ExplainService, ServingConfig

ROOT = Path(__file__).resolve().parent.parent
MODEL_CONFIG = ROOT / "archives" / "efficientnet_lite0" / "model-config.yaml"


def b64(image: bytes) -> str:
    return base64.b64encode(image).decode("ascii")


def v1_instance(image: bytes, **options) -> dict:
    return {"image": {"b64": b64(image)}, **options}


def v2_body(image: bytes, parameters: dict | None = None, input_parameters: dict | None = None) -> dict:
    image_input = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(image)]}
    if input_parameters:
        image_input["parameters"] = input_parameters
    body = {"id": "req-1", "inputs": [image_input]}
    if parameters:
        body["parameters"] = parameters
    return body


def from_v2(body: dict) -> dict:
    """whyserve's response from a v2 body, checking the outputs' declared datatypes and shapes."""
    outputs = []
    for output in body["outputs"]:
        assert list(output["shape"]) == [len(output["data"])], output["name"]
        assert output["datatype"] == {"topk_index": "INT64", "topk_probability": "FP32"}.get(output["name"], "BYTES")
        outputs.append(Output(output["name"], output["datatype"], tuple(output["shape"]), output["data"]))
    return v2_response(outputs)


def reference_service() -> ExplainService:
    """whyserve's own protocol in-process, with the archive's settings: the answers to match."""
    return ExplainService(ServingConfig.from_dict(yaml.safe_load(MODEL_CONFIG.read_text())["handler"]))


def native_answer(service: ExplainService, image: bytes, **options) -> tuple[int, dict]:
    (reply,) = service.handle([({"body": {"image": b64(image), **options}}, {})])
    return reply.status, json.loads(reply.body)


def heatmap(body: dict) -> np.ndarray:
    png = Image.open(io.BytesIO(base64.b64decode(body["explanation"]["heatmap"]["data"])))
    return np.asarray(png, dtype=np.float64) / 255.0


def assert_same_answer(got: dict, expected: dict) -> None:
    """Equal up to encoding: the same classes and explanation fields, probabilities to float32
    rounding, the heatmap to one grey level (the batch can differ, so can the last float bits)."""
    assert [(p["index"], p["label"]) for p in got["predictions"]] == [(p["index"], p["label"]) for p in expected["predictions"]]
    np.testing.assert_allclose(
        [p["probability"] for p in got["predictions"]], [p["probability"] for p in expected["predictions"]], rtol=1e-4, atol=1e-6
    )
    if expected["explanation"] is None:
        assert got["explanation"] is None
        return
    ignore = {"timing_ms", "heatmap"}
    assert {k: v for k, v in got["explanation"].items() if k not in ignore} == {
        k: v for k, v in expected["explanation"].items() if k not in ignore
    }
    assert {k: v for k, v in got["explanation"]["heatmap"].items() if k != "data"} == {
        k: v for k, v in expected["explanation"]["heatmap"].items() if k != "data"
    }
    assert np.abs(heatmap(got) - heatmap(expected)).max() <= 1 / 255 + 1e-9
