"""End to end: the flowers_quality regression archive in a real TorchServe 0.12.

A noisy-square flower of a seed no training used (``whyserve.data.quality``, seed 4343): the
served prediction is the noise strength, ``contrastive`` takes a contrast value ("why 0.58,
rather than 0.75?"), ``gradcam`` explains the score, and bad contrast values get a 400."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

import serving_helpers as helpers
from serving_helpers import encoded, start_server
from whyserve.client import Client
from whyserve.data.quality import make_distorted

pytestmark = pytest.mark.slow
MODEL = "flowers_quality"
TOLERANCE = 0.15  # ~4x the held-out RMSE (0.044; MSE 0.0019 on 400 images of seed 2)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ts = start_server(tmp_path_factory, "local.properties", models=(MODEL,))
    yield ts
    ts.stop()


def heatmap(body):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["explanation"]["heatmap"]["data"])))).astype(float)


def post(server, image, **options):
    """Raw bytes, options in X-Explain-* headers."""
    return helpers.post(f"{server.inference_url}/predictions/{MODEL}", helpers.raw(image, **options))


def post_json(server, image, **options):
    return helpers.post(f"{server.inference_url}/predictions/{MODEL}", helpers.as_json(image, **options))


@pytest.fixture(scope="module")
def noisy():
    """Strength 0.6 in a square of an unseen seed; (the image's ground truth, its PNG bytes)."""
    distorted = make_distorted(4343, 1, strength=0.6)
    return distorted, encoded(Image.fromarray(distorted.image))


@pytest.fixture(scope="module")
def gradcam(server, noisy):
    reply = post(server, noisy[1])
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_prediction_is_the_noise_strength_and_gradcam_the_default(gradcam, noisy):
    predictions = gradcam["predictions"]
    assert [(p["index"], p["label"]) for p in predictions] == [(0, "noise strength")]
    assert "probability" not in predictions[0]
    assert abs(predictions[0]["value"] - noisy[0].strength) < TOLERANCE
    explanation = gradcam["explanation"]
    assert explanation["method"] == "gradcam" and explanation["contrast"] is None
    assert explanation["target"] == {"index": 0, "label": "noise strength"}
    h = heatmap(gradcam)
    assert h.shape == (96, 96) and h.max() == 255
    assert h[noisy[0].mask].sum() / h.sum() > 2 * noisy[0].area  # the score's evidence is the noise


@pytest.mark.parametrize("above", [True, False])
def test_contrastive_takes_a_value_above_or_below_the_prediction(server, noisy, gradcam, above):
    value = gradcam["predictions"][0]["value"]
    contrast = round(min(1.0, value + 0.25) if above else max(0.0, value - 0.25), 3)
    reply = post(server, noisy[1], method="contrastive", contrast=contrast)
    assert reply.status_code == 200, reply.text
    explanation = reply.json()["explanation"]
    assert explanation["method"] == "contrastive" and explanation["contrast"] == {"value": contrast}
    h, plain = heatmap(reply.json()), heatmap(gradcam)
    assert h.shape == (96, 96) and h.max() == 255
    # one output: dJ/dA = 2 (y - q) dy/dA, so below the prediction the map is Grad-CAM's
    # (a positive factor, removed by the min-max) and above it is ReLU of the negated sum
    if above:
        assert np.abs(h - plain).max() > 100
    else:
        assert np.abs(h - plain).max() <= 1


def test_a_json_number_is_a_contrast_value(server, noisy):
    reply = post_json(server, noisy[1], method="contrastive", contrast=0.75)
    assert reply.status_code == 200, reply.text
    assert reply.json()["explanation"]["contrast"] == {"value": 0.75}


@pytest.mark.parametrize(
    "contrast, message",
    [("high", "is not a number"), ("nan", "not a finite number"), ("1.5", "outside the model's output range [0, 1]")],
)
def test_bad_contrast_values_are_400(server, noisy, contrast, message):
    reply = post(server, noisy[1], method="contrastive", contrast=contrast)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == 400 and message in error["message"] and "contrast" in error["message"]
    assert error["valid"] == ["a number from 0 to 1"]


def test_contrastive_without_a_contrast_value_is_400(server, noisy):
    for reply in (post(server, noisy[1], method="contrastive"), post_json(server, noisy[1], method="contrastive", contrast=[1])):
        assert reply.status_code == 400, reply.text
        assert "contrast" in reply.json()["error"]["message"]


@pytest.mark.parametrize("encoding", ["multipart", "json"])
def test_python_client_reads_the_value_and_asks_the_regression_question(server, noisy, encoding):
    client = Client(server.inference_url, model=MODEL)
    result = client.explain(noisy[1], method="contrastive", contrast=0.75, encoding=encoding)
    top = result.top
    assert top.label == "noise strength" and top.probability is None and abs(top.value - noisy[0].strength) < TOLERANCE
    assert result.question == f"why {top.value:.3g}, rather than 0.75?"
    assert result.heatmap.shape == (96, 96)
