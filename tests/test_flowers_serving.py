"""End to end: the flowers_cnn, flowers_bcos and flowers_part archives in a real TorchServe 0.12."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
from PIL import Image

from serving_helpers import encoded, start_server
from whyserve.data.flowers import CLASS_NAMES, SINGLE_CLASS_NAMES, make_flower, make_single_part_flower
from whyserve.vebi.fit import Relevance, relevance_path

pytestmark = pytest.mark.slow
MODELS = ["flowers_cnn", "flowers_bcos", "flowers_part"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ts = start_server(tmp_path_factory, "local.properties", models=tuple(MODELS))
    yield ts
    ts.stop()


@pytest.fixture(scope="module")
def flower():
    f = make_flower(4242, 0, label=5)
    return f, encoded(Image.fromarray(f.image))


def post(server, model, image, **options):
    headers = {"Content-Type": "application/octet-stream"} | {f"X-Explain-{k.capitalize()}": str(v) for k, v in options.items()}
    return requests.post(f"{server.inference_url}/predictions/{model}", data=image, headers=headers, timeout=120)


def heatmap(body):
    data = base64.b64decode(body["explanation"]["heatmap"]["data"])
    return np.asarray(Image.open(io.BytesIO(data)))


def test_bcos_archive_serves_bcos_maps_by_default(server, flower):
    f, image = flower
    reply = post(server, "flowers_bcos", image)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["predictions"][0]["label"] == CLASS_NAMES[5]
    assert body["explanation"]["method"] == "bcos"
    assert body["explanation"]["target"]["index"] == 5
    h = heatmap(body)
    assert h.shape == (96, 96) and h.max() == 255
    # the positive contributions lie on the flower far more than its share of the image
    assert h[f.flower_mask].sum() / h.sum() > 2 * f.flower_mask.mean()


def test_bcos_archive_answers_why_p_rather_than_q(server, flower):
    _f, image = flower
    reply = post(server, "flowers_bcos", image, contrast=CLASS_NAMES[4], outputs="heatmap,bcos_color")
    assert reply.status_code == 200, reply.text
    explanation = reply.json()["explanation"]
    assert explanation["method"] == "bcos" and explanation["contrast"]["index"] == 4
    color = Image.open(io.BytesIO(base64.b64decode(explanation["bcos_color"]["data"])))
    assert color.mode == "RGBA" and color.size == (96, 96)
    assert 0 < np.asarray(color)[..., 3].astype(bool).mean() < 1  # opaque only where W(x) contributes
    plain = heatmap(post(server, "flowers_bcos", image).json())
    assert np.abs(heatmap(reply.json()).astype(float) - plain).max() > 10  # a different question
    same = post(server, "flowers_bcos", image, target=5, contrast=5)
    assert same.status_code == 400 and "equals the target" in same.json()["error"]["message"]


@pytest.mark.parametrize("model, method", [("flowers_cnn", "gradcam"), ("flowers_cnn", "scorecam"), ("flowers_bcos", "gradcam")])
def test_cam_methods_on_both_archives(server, flower, model, method):
    reply = post(server, model, flower[1], method=method, target=CLASS_NAMES[1])
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["explanation"]["method"] == method and body["explanation"]["target"]["index"] == 1
    assert heatmap(body).shape == (96, 96)


def test_contrastive_on_the_cnn_archive(server, flower):
    reply = post(server, "flowers_cnn", flower[1], method="contrastive", contrast=1)
    assert reply.status_code == 200, reply.text
    assert reply.json()["explanation"]["contrast"]["index"] == 1


def test_bcos_on_the_cnn_is_a_400_naming_its_methods(server, flower):
    reply = post(server, "flowers_cnn", flower[1], method="bcos")
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert "bcos" in error["message"]
    assert {"gradcam", "contrastive", "scorecam"} <= set(error["valid"]) and "bcos" not in error["valid"]


def test_fgvis_is_served_on_flowers_cnn_with_its_explanation_image(server, flower):
    _f, image = flower
    reply = post(server, "flowers_cnn", image, method="fgvis", outputs="heatmap,explanation_image")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    explanation = body["explanation"]
    assert explanation["method"] == "fgvis" and explanation["target"]["index"] == body["predictions"][0]["index"] == 5
    details = explanation["details"]  # the model-config defaults: deletion, defense on, at most 100 steps
    assert details["game"] == "deletion" and details["defense"] is True and 0 < details["iterations"] <= 100
    assert details["probability"] < body["predictions"][0]["probability"]  # the deletion removed evidence
    e = Image.open(io.BytesIO(base64.b64decode(explanation["explanation_image"]["data"])))
    assert e.mode == "RGB" and e.size == (96, 96)
    assert heatmap(body).shape == (96, 96)
    # e is a valid input: sent back, the model's probability of the class is the one reported
    again = post(server, "flowers_cnn", encoded(e), method="none").json()
    p = {c["index"]: c["probability"] for c in again["predictions"]}.get(5, 0.0)
    assert abs(p - details["probability"]) < 0.05


def test_fgvis_options_are_checked_and_bcos_does_not_serve_it(server, flower):
    bad = post(server, "flowers_cnn", flower[1], method="fgvis", game="hide")
    assert bad.status_code == 400 and bad.json()["error"]["valid"] == ["deletion", "preservation"]
    preservation = post(server, "flowers_cnn", flower[1], method="fgvis", game="preservation", iterations=5, defense="off")
    assert preservation.status_code == 200, preservation.text
    assert preservation.json()["explanation"]["details"]["iterations"] == 5
    assert post(server, "flowers_bcos", flower[1], method="fgvis").status_code == 400


def test_vebi_is_the_part_archives_default_and_lists_its_features(server):
    f = make_single_part_flower(4242, 1, label=4)  # green leaves
    reply = post(server, "flowers_part", encoded(Image.fromarray(f.image)))
    assert reply.status_code == 200, reply.text
    explanation = reply.json()["explanation"]
    assert explanation["method"] == "vebi" and explanation["target"]["label"] == SINGLE_CLASS_NAMES[4]
    features = explanation["features"]
    values = [x["relevance"] for x in features]
    assert 1 <= len(features) <= 3 and all(v > 0 for v in values) and values == sorted(values, reverse=True)
    relevant = {(layer, ch) for layer, ch, _ in Relevance.load(relevance_path("flowers_part")).relevant(4)}
    assert {(x["layer"], x["channel"]) for x in features} <= relevant
    h = heatmap(reply.json())
    assert h.shape == (96, 96) and h.max() == 255
    # the relevance file the worker read is the archive's copy, not the installed package's
    log = (server.workdir / "logs" / "model_log.log").read_text()
    used = [line.rsplit(" ", 1)[-1] for line in log.splitlines() if "VEBI relevance file" in line and "flowers_part" in line]
    assert used and all(path != str(relevance_path("flowers_part")) for path in used)


def test_vebi_on_the_cnn_archive_takes_a_feature_count(server, flower):
    reply = post(server, "flowers_cnn", flower[1], method="vebi", features=1)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["explanation"]["features"]) == 1
    bad = post(server, "flowers_cnn", flower[1], method="vebi", features=0)
    assert bad.status_code == 400 and "features" in bad.json()["error"]["message"]


def test_vebi_without_a_relevance_file_is_a_400_naming_the_models_with_one(server, flower):
    reply = post(server, "flowers_bcos", flower[1], method="vebi")
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert "flowers_cnn" in error["message"] and "flowers_part" in error["message"]
    assert "vebi" not in error["valid"]
