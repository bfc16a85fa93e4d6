"""KServe envelope translation (whyserve.serving.envelopes) on the real service, for the cases the
end-to-end tests do not send: binary v2 data, kserve's own parameters, malformed instances/inputs."""

from __future__ import annotations

import json

import pytest
from kserve_helpers import b64, reference_service

from serving_helpers import encoded
from whyserve.serving import envelopes
from whyserve.serving.protocol import ServingError


@pytest.fixture(scope="module")
def service():
    return reference_service()


@pytest.fixture(scope="module")
def chelsea(photos):
    return encoded(photos["chelsea"])


def image_input(data, **extra) -> dict:
    return {"name": "image", "datatype": "BYTES", "shape": [1], "data": data, **extra}


def test_binary_v2_data_and_kserves_parameters_are_understood(service, chelsea):
    request = envelopes.v2_request([image_input([chelsea], parameters={"content_type": "bytes", "topk": 2})], {"method": "none"})
    (reply,) = envelopes.answer(service, [request])
    assert reply.status == 200
    outputs = envelopes.v2_outputs(reply)
    assert [o.name for o in outputs] == ["topk_index", "topk_probability", "topk_label"]
    assert envelopes.v2_response(outputs) == reply.body


def test_v2_outputs_round_trip_to_the_native_response(service, chelsea):
    (reply,) = envelopes.answer(service, [envelopes.v2_request([image_input(b64(chelsea))], {"outputs": "heatmap,values"})])
    native = reply.body
    outputs = envelopes.v2_outputs(reply)
    explanation = json.loads(next(o for o in outputs if o.name == "explanation").data[0])
    assert "data" not in explanation["heatmap"] and explanation["values"] == native["explanation"]["values"]
    assert envelopes.v2_response(outputs) == native


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ({"name": "image"}, "'inputs' list"),
        ([image_input(["a", "b"])], "2 elements"),
        ([image_input([3])], "must hold the image file"),
        ([{**image_input(["a"]), "name": "img"}], "named 'image'"),
    ],
)
def test_malformed_v2_inputs_are_400(inputs, words):
    error = envelopes.v2_request(inputs)
    assert isinstance(error, ServingError) and error.status == 400 and words in error.message


def test_v1_instances_keep_their_order_and_errors_stay_in_place(service, chelsea):
    body = {"instances": [{"image": {"b64": b64(chelsea), "url": "x"}}, {"image": b64(chelsea), "method": "none"}, 7]}
    replies = envelopes.answer(service, envelopes.v1_requests(body))
    assert [reply.status for reply in replies] == [400, 200, 400]
    assert envelopes.status(replies) == 400
    items = envelopes.v1_body(replies, explain=True)["explanations"]
    assert (
        "'b64'" in items[0]["error"]["message"] and items[1]["explanation"] is None and "object" in items[2]["error"]["message"]
    )
    assert envelopes.v1_requests({"instances": {}})[0].status == 400
