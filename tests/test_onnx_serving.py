"""End to end: the efficientnet_lite0_onnx archive (ONNX Runtime: Score-CAM, Grad-CAM, contrastive) in a real TorchServe."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import CAT_CLASSES
from serving_helpers import encoded, start_server
from whyserve import Explainer, ExplainRequest
from whyserve.backends.onnx.runtime import InvalidOnnxModel
from whyserve.serving.service import ExplainService, ServingConfig

pytestmark = pytest.mark.slow
MODEL = "efficientnet_lite0_onnx"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ts = start_server(tmp_path_factory, "local.properties", models=(MODEL,))
    yield ts
    ts.stop()


def post(server, image, **options):
    headers = {"Content-Type": "application/octet-stream"} | {f"X-Explain-{k.capitalize()}": str(v) for k, v in options.items()}
    return requests.post(f"{server.inference_url}/predictions/{MODEL}", data=image, headers=headers, timeout=120)


def test_onnx_archive_serves_prediction_and_fast_scorecam(server, photos, effnet):
    reply = post(server, encoded(photos["chelsea"]), target="tiger cat")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["predictions"][0]["index"] in CAT_CLASSES
    explanation = body["explanation"]
    assert explanation["method"] == "scorecam" and explanation["layer"] == "head_act"
    assert explanation["backend"] == "onnxruntime:CPUExecutionProvider"
    png = Image.open(io.BytesIO(base64.b64decode(explanation["heatmap"]["data"])))
    served = np.asarray(png, dtype=np.float64) / 255.0
    # The same map as the PyTorch engine's fast Score-CAM (64 channels, the archive's default).
    x = effnet.preprocess(photos["chelsea"])[None]
    request = ExplainRequest("scorecam", "tiger cat", weighting="probability", channels=64)
    expected = Explainer(effnet).explain(x, [request]).explanations[0].heatmap
    assert np.abs(served - expected).max() <= 0.5 / 255 + 1e-4


@pytest.mark.parametrize(
    "options",
    [{"method": "gradcam"}, {"method": "contrastive", "contrast": "balloon"}],
    ids=["gradcam", "contrastive"],
)
def test_onnx_archive_serves_gradient_methods(server, photos, effnet, options):
    """The trunk on ONNX Runtime, the head in PyTorch: the PyTorch engine's maps."""
    reply = post(server, encoded(photos["coffee"]), **options)
    assert reply.status_code == 200, reply.text
    explanation = reply.json()["explanation"]
    assert explanation["method"] == options["method"] and explanation["backend"] == "onnxruntime:CPUExecutionProvider"
    png = Image.open(io.BytesIO(base64.b64decode(explanation["heatmap"]["data"])))
    served = np.asarray(png, dtype=np.float64) / 255.0
    x = effnet.preprocess(photos["coffee"])[None]
    method = options["method"]
    expected = Explainer(effnet).explain(x, [ExplainRequest(method, contrast=options.get("contrast"))])
    assert np.abs(served - expected.explanations[0].heatmap).max() <= 0.5 / 255 + 1e-4


def test_onnx_archive_refuses_methods_it_does_not_serve(server, photos):
    reply = post(server, encoded(photos["coffee"]), method="bcos")
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert "bcos" in error["message"] and error["valid"] == ["gradcam", "contrastive", "scorecam", "none"]
    assert post(server, encoded(photos["coffee"])).status_code == 200  # still serving


def test_onnx_file_with_wrong_outputs_is_refused_at_load(tmp_path):
    import torch

    path = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, input_names=["input"])
    config = ServingConfig.from_dict({"model": "efficientnet_lite0", "backend": "onnxruntime", "weights": str(path)})
    with pytest.raises(InvalidOnnxModel, match="outputs 'logits'"):
        ExplainService(config)
