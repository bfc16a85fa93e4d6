"""``whyserve.client`` against a real TorchServe 0.12 serving the real EfficientNet-Lite0 archive
with configs/production.properties (token auth on): every kind of image input, both encodings,
the errors, the management API."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from serving_helpers import MODEL, encoded, start_server
from whyserve.client import Client, ExplainResult, ServerError, image_bytes
from whyserve.demo import read_token_file
from whyserve.photos import photo_path

pytestmark = pytest.mark.slow

TIGER_CAT = 282


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ts = start_server(tmp_path_factory, "production.properties")
    yield ts
    ts.stop()


@pytest.fixture(scope="module")
def keys(server) -> tuple[str, str]:
    """(inference, management) keys from the key_file.json TorchServe wrote."""
    return read_token_file(server.workdir / "key_file.json")


@pytest.fixture(scope="module")
def client(server, keys):
    return Client(server.inference_url, keys[0], 120, MODEL, server.management_url, keys[1])


@pytest.fixture(scope="module")
def reference(client) -> ExplainResult:
    """chelsea sent as the file's own bytes: the answer every other input form must give."""
    return client.explain(photo_path("chelsea").read_bytes(), method="gradcam")


def test_result_is_typed(reference):
    assert reference.top.index == TIGER_CAT and reference.top.label == "tiger cat"
    assert len(reference.predictions) == 5 and reference.predictions[0].probability > reference.predictions[1].probability
    assert reference.method == "gradcam" and reference.target == {"index": TIGER_CAT, "label": "tiger cat"}
    assert reference.contrast is None and reference.question == "why tiger cat?"
    assert reference.heatmap.dtype == np.float32 and reference.heatmap.shape == (224, 224)
    assert reference.heatmap.min() >= 0 and reference.heatmap.max() == 1.0
    assert reference.overlay.size == (224, 224) and reference.overlay.format == "JPEG"
    assert reference.backend == "torch:cpu" and set(reference.timing_ms) == {"predict", "explain"}
    assert reference.raw["explanation"]["layer"] == "head_act"


@pytest.mark.parametrize("form", ["path", "str path", "bundled name", "bytearray", "PIL", "uint8 array", "float array"])
def test_every_input_form_gives_the_same_answer(client, reference, form):
    path = photo_path("chelsea")
    picture = Image.open(path).convert("RGB")
    image = {
        "path": path,
        "str path": str(path),
        "bundled name": "chelsea",
        "bytearray": bytearray(path.read_bytes()),
        "PIL": picture,
        "uint8 array": np.asarray(picture),
        "float array": np.asarray(picture, dtype=np.float64) / 255.0,
    }[form]
    result = client.explain(image, method="gradcam")
    assert [p.index for p in result.predictions] == [p.index for p in reference.predictions]
    # chelsea.png is an RGB PNG, so re-encoding its pixels as PNG changes nothing the model sees
    assert np.abs(result.heatmap - reference.heatmap).max() <= 1 / 255


def test_json_encoding_and_contrast(client, reference):
    result = client.explain("chelsea", method="contrastive", contrast="Egyptian cat", encoding="json", topk=3)
    assert len(result.predictions) == 3 and result.top.label == "tiger cat"
    assert result.contrast == {"index": 285, "label": "Egyptian cat"}
    assert result.question == "why tiger cat, rather than Egyptian cat?"
    assert np.abs(result.heatmap - reference.heatmap).mean() > 0.02  # another question, another map


def test_values_output_and_prediction_only(client):
    result = client.explain("coffee", method="scorecam", channels=8, outputs=["values"])
    assert result.values.shape == (7, 7) and result.heatmap is None and result.overlay is None
    assert result.top.label == "espresso"
    plain = client.explain("coffee", method="none")
    assert plain.method is None and plain.question is None and plain.top.label == "espresso"


def test_server_errors_carry_code_message_and_valid(client):
    with pytest.raises(ServerError) as refused:
        client.explain("chelsea", method="gradcam", target="unicorn")
    assert refused.value.status == refused.value.code == 400
    assert "unicorn" in refused.value.message
    with pytest.raises(ServerError) as bad_method:
        client.explain("chelsea", method="lime")
    assert bad_method.value.valid == ["gradcam", "contrastive", "scorecam", "none"]
    assert "valid: gradcam, contrastive, scorecam, none" in str(bad_method.value)
    with pytest.raises(ServerError) as not_image:
        client.explain(b"these bytes are no photo")
    assert not_image.value.status == 400 and "not an image" in not_image.value.message


def test_token_auth(server, keys):
    with pytest.raises(ServerError) as refused:
        Client(server.inference_url, model=MODEL).explain("chelsea")
    assert refused.value.status in (400, 401) and "Token Authorization failed" in refused.value.message
    with pytest.raises(ServerError, match="Token Authorization failed"):
        Client(server.inference_url, keys[0], management=server.management_url).models()  # the inference key is not it


def test_models_from_the_management_api(client):
    assert client.models() == [MODEL]
    with pytest.raises(ValueError, match="management"):
        Client("http://127.0.0.1:1").models()


def test_full_prediction_url_and_unknown_model(server, keys):
    rocket = Client(f"{server.inference_url}/predictions/{MODEL}", keys[0]).explain("rocket")
    assert rocket.top.label in ("missile", "projectile, missile")
    with pytest.raises(ServerError) as unknown:
        Client(server.inference_url, keys[0], model="nope").explain("rocket")
    assert unknown.value.status == 404 and "nope" in unknown.value.message  # TorchServe's own error JSON


def test_bad_inputs_are_refused_before_sending():
    with pytest.raises(FileNotFoundError, match="bundled photo"):
        image_bytes("no_such_file.jpg")
    with pytest.raises(ValueError, match=r"floats in \[0, 1\]"):
        image_bytes(np.full((8, 8, 3), 2.0))
    with pytest.raises(ValueError, match="H x W"):
        image_bytes(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(TypeError, match="cannot send"):
        image_bytes(42)
    assert image_bytes(Image.new("CMYK", (4, 4))) == encoded(Image.new("CMYK", (4, 4)).convert("RGB"))
