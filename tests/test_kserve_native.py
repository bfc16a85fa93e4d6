"""End to end: the KServe-native runtime (``whyserve serve-kserve``, kserve's ModelServer, no
TorchServe) as a real process from .venv-kserve (scripts/setup-kserve: kserve's pins conflict
with .venv's) on a free port, over HTTP: liveness/readiness, v1, v2, raw bytes with
``X-Explain-*`` headers, bad inputs, a mixed batch. Answers must equal whyserve's own protocol
(in-process, same settings) up to encoding. kserve listens on 0.0.0.0 (hard-wired); we talk to
127.0.0.1 only.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from kserve_helpers import (
    MODEL_CONFIG,
    assert_same_answer,
    from_v2,
    native_answer,
    native_server,
    reference_service,
    v1_instance,
    v2_body,
)

from serving_helpers import MODEL, encoded, gif, png_bomb

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    args = ["--config", str(MODEL_CONFIG), "--max-batch-delay", "300"]  # wide, so concurrent requests share a batch
    with native_server(args, MODEL, tmp_path_factory.mktemp("kserve")) as base:
        yield base


@pytest.fixture(scope="module")
def service():
    return reference_service()


@pytest.fixture(scope="module")
def images(photos):
    return {name: encoded(photos[name]) for name in ("chelsea", "coffee", "grace_hopper")}


def v1(url: str, verb: str, body: object) -> requests.Response:
    return requests.post(f"{url}/v1/models/{MODEL}:{verb}", json=body, timeout=120)


def v2(url: str, body: object) -> requests.Response:
    return requests.post(f"{url}/v2/models/{MODEL}/infer", json=body, timeout=120)


def raw(url: str, image: bytes, **options) -> requests.Response:
    # An image/* type: kserve reads application/octet-stream bodies as JSON.
    headers = {"Content-Type": "image/png"} | {f"X-Explain-{k.capitalize()}": str(v) for k, v in options.items()}
    return requests.post(f"{url}/v1/models/{MODEL}:predict", data=image, headers=headers, timeout=120)


def test_liveness_and_readiness_at_kserves_routes(url):
    assert requests.get(f"{url}/", timeout=10).json() == {"status": "alive"}
    assert requests.get(f"{url}/v2/health/live", timeout=10).json() == {"live": True}
    assert requests.get(f"{url}/v2/health/ready", timeout=10).json() == {"ready": True}
    assert requests.get(f"{url}/v1/models/{MODEL}", timeout=10).json() == {"name": MODEL, "ready": True}
    assert requests.get(f"{url}/v2/models/{MODEL}/ready", timeout=10).json() == {"name": MODEL, "ready": True}
    assert requests.get(f"{url}/v1/models/no_such_model", timeout=10).status_code == 404


def test_v1_predict_and_explain_equal_the_native_answers(url, service, images):
    asked = [("chelsea", {}), ("coffee", {"method": "scorecam", "channels": 16, "topk": 2})]
    body = {"instances": [v1_instance(images[name], **options) for name, options in asked]}
    predicted, explained = v1(url, "predict", body), v1(url, "explain", body)
    assert predicted.status_code == explained.status_code == 200, predicted.text
    for got, also, (name, options) in zip(predicted.json()["predictions"], explained.json()["explanations"], asked):
        status, expected = native_answer(service, images[name], **options)
        assert status == 200
        assert_same_answer(got, expected)
        assert_same_answer(also, expected)


def test_v2_request_and_input_parameters_equal_the_native_answer(url, service, images):
    body = v2_body(images["chelsea"], parameters={"method": "contrastive", "target": "tabby"}, input_parameters={"target": 282})
    response = v2(url, body)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "req-1" and response.json()["model_name"] == MODEL
    _, expected = native_answer(service, images["chelsea"], method="contrastive", target=282)  # the input's target wins
    assert_same_answer(from_v2(response.json()), expected)
    del body["id"]  # optional in v2: the response gets an id of its own
    response = v2(url, body)
    assert response.status_code == 200 and isinstance(response.json()["id"], str) and response.json()["id"]


def test_raw_bytes_with_headers_and_whyserve_json_equal_the_native_answer(url, service, images):
    _, expected = native_answer(service, images["grace_hopper"], method="contrastive", target="military uniform", contrast="suit")
    response = raw(url, images["grace_hopper"], method="contrastive", target="military uniform", contrast="suit")
    assert response.status_code == 200, response.text
    assert_same_answer(response.json(), expected)
    body = {
        "image": v1_instance(images["grace_hopper"])["image"]["b64"],
        "method": "contrastive",
        "target": "military uniform",
        "contrast": "suit",
    }
    assert_same_answer(v1(url, "predict", body).json(), expected)


def test_bad_inputs_get_whyserves_4xx_in_every_envelope(url, images, photos):
    for image, code in ((b"not an image", 400), (gif(photos["chelsea"]), 415), (png_bomb(), 413)):
        response = raw(url, image)
        assert response.status_code == code and response.json()["error"]["code"] == code
        response = v1(url, "predict", {"instances": [v1_instance(images["chelsea"], method="none"), v1_instance(image)]})
        assert response.status_code == code
        good, bad = response.json()["predictions"]
        assert good["explanation"] is None and bad["error"]["code"] == code
        response = v2(url, v2_body(image))
        assert response.status_code == code and from_v2(response.json())["error"]["code"] == code
    response = raw(url, images["chelsea"], method="gradcam", contrast="tabby")
    assert response.status_code == 400 and "contrastive" in str(response.json()["error"]["valid"])
    assert v1(url, "explain", {"instances": []}).status_code == 400
    response = v2(url, v2_body(images["chelsea"], parameters={"topk": 1000}))
    assert response.status_code == 400 and "topk" in from_v2(response.json())["error"]["message"]
    assert raw(url, images["coffee"], method="none").status_code == 200  # the server lives on


def test_a_mixed_batch_keeps_each_requests_target(url, service, images):
    """v1, v2 and raw requests sent together (they share batches within the 300 ms delay)."""
    asked = [
        ("v1", "chelsea", {"target": "tabby"}),
        ("v2", "chelsea", {"method": "contrastive", "target": 285, "contrast": "tiger cat"}),
        ("raw", "coffee", {"target": "espresso"}),
        ("v1", "grace_hopper", {"method": "none"}),
        ("raw", "chelsea", {"method": "lime"}),
    ]

    def send(item):
        kind, name, options = item
        if kind == "v1":
            response = v1(url, "predict", {"instances": [v1_instance(images[name], **options)]})
            return response.status_code, response.json()["predictions"][0]
        if kind == "v2":
            response = v2(url, v2_body(images[name], input_parameters=options))
            return response.status_code, from_v2(response.json())
        response = raw(url, images[name], **options)
        return response.status_code, response.json()

    with ThreadPoolExecutor(len(asked)) as pool:
        answers = list(pool.map(send, asked))
    for (status, got), (_, name, options) in zip(answers, asked):
        expected_status, expected = native_answer(service, images[name], **options)
        assert status == expected_status
        if status == 200:
            assert_same_answer(got, expected)
        else:
            assert got["error"]["code"] == 400 and "lime" in got["error"]["message"]
    assert answers[0][1]["explanation"]["target"]["label"] == "tabby"
    assert answers[1][1]["explanation"]["contrast"]["label"] == "tiger cat"
