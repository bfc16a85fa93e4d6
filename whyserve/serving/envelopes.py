"""KServe's v1 and v2 (open inference) envelopes around whyserve's protocol, framework-neutral.

Both the TorchServe handler (with ``service_envelope=kserve`` / ``kservev2``) and the
KServe-native runtime use these functions, so both answer the same bodies:

- v1: ``{"instances": [{"image": {"b64": ...}, "method": ..., "target": ...}, ...]}`` in;
  ``{"predictions": [<whyserve response>, ...]}`` out (``explanations`` on ``:explain``). Every
  instance is answered (a bad one with its ``{"error": ...}``); the status is the first error's.
- v2: one BYTES input named ``image`` (one element: the image file, base64 in JSON); options
  as request or input parameters (the input's win). Outputs: ``topk_index`` (INT64 [k]),
  ``topk_probability`` (FP32 [k]; ``topk_value``, the outputs, for a regression model),
  ``topk_label`` (BYTES [k]), ``heatmap`` (BYTES [1]: the
  heatmap PNG, base64, the native response's ``explanation.heatmap.data``) and
  ``explanation`` (BYTES [1]: the native ``explanation`` as JSON, without the heatmap's data).
  A bad request gets its status and one output ``error`` (BYTES [1]: whyserve's error JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from whyserve.serving.protocol import ServingError
from whyserve.serving.service import ExplainService, Reply, error_reply

V1 = "kserve"
V2 = "kservev2"
IMAGE_INPUT = "image"
# Parameters KServe's own clients add to v2 inputs; they are no whyserve options.
KSERVE_PARAMETERS = frozenset({"content_type", "binary_data", "binary_data_size", "binary_data_output"})

Fields = tuple[dict, dict]  # (fields, headers) of one whyserve request, as ExplainService.handle takes


@dataclass(frozen=True)
class Output:
    """One v2 output tensor: ``data`` is flat, row-major."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list

    def to_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape), "data": self.data}


def answer(service: ExplainService, requests: list[Fields | ServingError]) -> list[Reply]:
    """``service.handle`` on the requests the envelope could read; the others keep their error."""
    good = [request for request in requests if not isinstance(request, ServingError)]
    replies = iter(service.handle(good))
    return [error_reply(r) if isinstance(r, ServingError) else next(replies) for r in requests]


def status(replies: list[Reply]) -> int:
    """One HTTP status for replies that share a response: the first error's, else 200."""
    return next((reply.status for reply in replies if reply.status != 200), 200)


# -- v1 ---------------------------------------------------------------------------------------


def v1_requests(body: object) -> list[Fields | ServingError]:
    """The ``instances`` of a v1 body (parsed JSON) as whyserve requests; one error if it has none."""
    instances = body.get("instances") if isinstance(body, Mapping) else None
    if not isinstance(instances, list) or not instances:
        return [ServingError(400, "a v1 body needs a non-empty 'instances' list", [_V1_FORM], "bad_json")]
    return [v1_request(instance) for instance in instances]


def v1_request(instance: object) -> Fields | ServingError:
    """One v1 instance as whyserve fields, or the error that says why it is not one."""
    if not isinstance(instance, Mapping):
        return ServingError(400, f"a v1 instance must be an object, not {type(instance).__name__}", [_V1_FORM], "bad_json")
    image = instance.get(IMAGE_INPUT)
    if isinstance(image, Mapping):
        if set(image) != {"b64"}:
            return ServingError(400, "a v1 'image' object holds exactly one key, 'b64'", ['{"b64": "<base64>"}'], "bad_json")
        image = image["b64"]
    return {"body": {**instance, IMAGE_INPUT: image}}, {}


def v1_items(replies: list[Reply]) -> list:
    return [reply.body for reply in replies]


def v1_body(replies: list[Reply], explain: bool = False) -> dict:
    return {("explanations" if explain else "predictions"): v1_items(replies)}


_V1_FORM = '{"instances": [{"image": {"b64": "<base64 of JPEG/PNG/WebP>"}, "method": "gradcam", ...}]}'


# -- v2 ---------------------------------------------------------------------------------------


def v2_request(inputs: object, parameters: Mapping | None = None) -> Fields | ServingError:
    """A v2 request's inputs (dicts with name, datatype, shape, data, parameters) as whyserve
    fields. ``data`` of the image is a list of one element, or that element (TorchServe's
    envelope hands on the first); a str is base64, bytes are the file (binary extension)."""
    try:
        image_input = _image_input(inputs)
        image = _one_element(image_input.get("data"))
        options = {**dict(parameters or {}), **dict(image_input.get("parameters") or {})}
    except ServingError as error:
        return error
    options = {k: v for k, v in options.items() if k not in KSERVE_PARAMETERS}
    if isinstance(image, (bytes, bytearray)):
        return {IMAGE_INPUT: bytes(image), **options}, {}
    return {"body": {**options, IMAGE_INPUT: image}}, {}


def _image_input(inputs: object) -> Mapping:
    if not isinstance(inputs, list) or not all(isinstance(i, Mapping) for i in inputs):
        raise ServingError(400, "a v2 body needs an 'inputs' list of tensors", [_V2_FORM], "bad_json")
    names = [i.get("name") for i in inputs]
    if names != [IMAGE_INPUT]:
        raise ServingError(400, f"inputs {names}: a v2 request has exactly one input, named 'image'", [_V2_FORM], "bad_json")
    if inputs[0].get("datatype") != "BYTES":
        raise ServingError(400, f"input 'image' has datatype {inputs[0].get('datatype')!r}", ["BYTES"], "bad_json")
    return inputs[0]


def _one_element(data: object) -> object:
    if isinstance(data, list):
        if len(data) != 1:
            raise ServingError(400, f"input 'image' holds {len(data)} elements; one image per request", ["shape [1]"], "bad_json")
        data = data[0]
    if not isinstance(data, (str, bytes, bytearray)):
        raise ServingError(400, "input 'image' must hold the image file (base64 in JSON)", [_V2_FORM], "bad_json")
    return data


def v2_outputs(reply: Reply) -> list[Output]:
    body = reply.body
    if reply.status != 200:
        return [Output("error", "BYTES", (1,), [reply.text])]
    predictions = body["predictions"]
    score = "value" if predictions and "value" in predictions[0] else "probability"  # regression: the values
    outputs = [
        Output("topk_index", "INT64", (len(predictions),), [p["index"] for p in predictions]),
        Output(f"topk_{score}", "FP32", (len(predictions),), [p[score] for p in predictions]),
        Output("topk_label", "BYTES", (len(predictions),), [p["label"] for p in predictions]),
    ]
    explanation = body["explanation"]
    if explanation is None:
        return outputs
    heatmap = explanation.get("heatmap")
    if heatmap is not None:
        outputs.append(Output("heatmap", "BYTES", (1,), [heatmap["data"]]))
        explanation = {**explanation, "heatmap": {k: v for k, v in heatmap.items() if k != "data"}}
    outputs.append(Output("explanation", "BYTES", (1,), [json.dumps(explanation, separators=(",", ":"))]))
    return outputs


def v2_response(outputs: list[Output]) -> dict:
    """whyserve's response (DESIGN.md) back from v2 outputs: what a client of the v2 protocol does."""
    named = {output.name: output.data for output in outputs}
    if "error" in named:
        return json.loads(named["error"][0])
    score = "value" if "topk_value" in named else "probability"
    predictions = [
        {"index": i, "label": label, score: p}
        for i, label, p in zip(named["topk_index"], named["topk_label"], named[f"topk_{score}"])
    ]
    explanation = json.loads(named["explanation"][0]) if "explanation" in named else None
    if explanation is not None and "heatmap" in named:
        explanation["heatmap"]["data"] = named["heatmap"][0]
    return {"predictions": predictions, "explanation": explanation}


_V2_FORM = '{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["<base64>"], "parameters": {...}}]}'
