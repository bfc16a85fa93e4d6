"""End to end: the real efficientnet_lite0 archive in a real TorchServe 0.12 with KServe's
envelopes (``service_envelope=kserve`` and ``kservev2``, server-wide, as KServe's TorchServe
runtime sets it), over HTTP: ``/v1/models/<m>:predict``, ``:explain``, ``/v2/models/<m>/infer``.

The answers must equal whyserve's own protocol (run in-process with the archive's settings)
up to encoding. TorchServe's envelopes read only the first request of a batch, so these
servers run the archive with batchSize 1 (README); a v1 request's instances share one forward.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from kserve_helpers import assert_same_answer, from_v2, native_answer, reference_service, v1_instance, v2_body

from serving_helpers import MODEL, ROOT, encoded, gif, png_bomb
from whyserve.serving import launcher

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two TorchServes, one per envelope, started side by side from one model store."""
    store = tmp_path_factory.mktemp("model_store")
    build = [sys.executable, str(ROOT / "archives" / "build.py"), MODEL, "--export-path", str(store), "--batch-size", "1"]
    subprocess.run(build, check=True, capture_output=True)
    started = {}
    try:
        for envelope in ("kserve", "kservev2"):
            workdir = tmp_path_factory.mktemp(f"torchserve_{envelope}")
            overrides = {"service_envelope": envelope}
            started[envelope] = launcher.start(
                store, [MODEL], ROOT / "configs" / "local.properties", workdir, overrides=overrides
            )
        for server in started.values():
            server.wait_ready(timeout=240)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def service():
    return reference_service()


@pytest.fixture(scope="module")
def images(photos):
    return {name: encoded(photos[name]) for name in ("chelsea", "coffee")}


def v1(servers, verb: str, body: object) -> requests.Response:
    return requests.post(f"{servers['kserve'].inference_url}/v1/models/{MODEL}:{verb}", json=body, timeout=120)


def v2(servers, body: object) -> requests.Response:
    return requests.post(f"{servers['kservev2'].inference_url}/v2/models/{MODEL}/infer", json=body, timeout=120)


def test_v1_predict_and_explain_equal_the_native_answers(servers, service, images):
    asked = [("chelsea", {}), ("coffee", {"method": "contrastive", "target": "espresso", "contrast": "cup"})]
    body = {"instances": [v1_instance(images[name], **options) for name, options in asked]}
    predicted = v1(servers, "predict", body)
    explained = v1(servers, "explain", body)
    assert predicted.status_code == explained.status_code == 200
    assert list(predicted.json()) == ["predictions"] and list(explained.json()) == ["explanations"]
    for got, also, (name, options) in zip(predicted.json()["predictions"], explained.json()["explanations"], asked):
        status, expected = native_answer(service, images[name], **options)
        assert status == 200
        assert_same_answer(got, expected)
        assert_same_answer(also, expected)
    assert predicted.json()["predictions"][0]["predictions"][0]["label"] in ("tabby", "tiger cat", "Egyptian cat")


def test_v1_bad_instances_get_whyserves_errors_and_good_ones_their_answers(servers, service, images, photos):
    body = {
        "instances": [
            v1_instance(images["chelsea"], method="none"),
            v1_instance(b"not an image"),
            v1_instance(images["chelsea"], method="lime"),
            "chelsea.png",
        ]
    }
    response = v1(servers, "predict", body)
    assert response.status_code == 400
    good, not_image, bad_method, not_object = response.json()["predictions"]
    assert_same_answer(good, native_answer(service, images["chelsea"], method="none")[1])
    assert not_image["error"]["code"] == bad_method["error"]["code"] == not_object["error"]["code"] == 400
    assert "not an image" in not_image["error"]["message"]
    assert "gradcam" in bad_method["error"]["valid"]
    assert "instance must be an object" in not_object["error"]["message"]
    for image, code in ((gif(photos["chelsea"]), 415), (png_bomb(), 413)):
        response = v1(servers, "predict", {"instances": [v1_instance(image)]})
        assert response.status_code == code
        assert response.json()["predictions"][0]["error"]["code"] == code
    response = v1(servers, "predict", {"instances": []})
    assert response.status_code == 400 and "instances" in response.json()["predictions"][0]["error"]["message"]


def test_v2_infer_equals_the_native_answer(servers, service, images):
    options = {"method": "contrastive", "target": "tabby", "contrast": "Egyptian cat", "topk": 3}
    response = v2(servers, v2_body(images["chelsea"], input_parameters=options))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-1" and body["model_name"] == MODEL
    assert [o["name"] for o in body["outputs"]] == ["topk_index", "topk_probability", "topk_label", "heatmap", "explanation"]
    status, expected = native_answer(service, images["chelsea"], **options)
    assert status == 200
    assert_same_answer(from_v2(body), expected)


def test_v2_bad_requests_get_whyserves_errors(servers, images, photos):
    two_inputs = v2_body(images["chelsea"])
    two_inputs["inputs"].append({**two_inputs["inputs"][0], "name": "mask"})
    fp32 = v2_body(images["chelsea"])
    fp32["inputs"][0].update(datatype="FP32", data=[0.5])
    cases = [
        (v2_body(images["chelsea"], input_parameters={"method": "lime"}), 400, "method"),
        (v2_body(images["chelsea"], input_parameters={"colour": "red"}), 400, "unknown option"),
        (v2_body(gif(photos["chelsea"])), 415, "GIF"),
        (v2_body(png_bomb()), 413, "pixels"),
        (two_inputs, 400, "exactly one input"),
        (fp32, 400, "datatype"),
    ]
    for body, code, words in cases:
        response = v2(servers, body)
        assert response.status_code == code, response.text
        error = from_v2(response.json())["error"]
        assert error["code"] == code and words in error["message"]
    assert v2(servers, v2_body(images["coffee"])).status_code == 200  # the worker lives on
