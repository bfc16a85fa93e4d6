"""The serving protocol without a server: parsing, validation, decoding, responses, batches."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import CAT_CLASSES
from serving_helpers import corrupt_jpeg, encoded, gif, png_bomb, truncated_jpeg
from whyserve import ExplainRequest
from whyserve.serving import (
    ExplainService,
    RequestDefaults,
    ServingConfig,
    ServingError,
    decode_image,
    parse_options,
    parse_payload,
)
from whyserve.serving.images import ImageLimits
from whyserve.serving.protocol import header_options
from whyserve.serving.torchserve import TorchServeHandler

DEFAULTS = RequestDefaults("gradcam", ("gradcam", "contrastive", "scorecam"))


# -- parsing -----------------------------------------------------------------------------------


def test_header_options_are_case_insensitive():
    headers = {
        "X-Explain-Method": "contrastive",
        "x-explain-target": "282",
        "X-EXPLAIN-CONTRAST": "Egyptian cat",
        "Accept": "*/*",
    }
    assert header_options(headers) == {"method": "contrastive", "target": "282", "contrast": "Egyptian cat"}


def test_raw_json_and_multipart_give_the_same_image_and_options(chelsea_png):
    raw = parse_payload({"body": chelsea_png}, {"X-Explain-Method": "gradcam", "X-Explain-Target": "285"})
    as_json = {"image": base64.b64encode(chelsea_png).decode(), "method": "gradcam", "target": 285}
    parsed = parse_payload({"body": as_json}, {})
    unparsed = parse_payload({"body": json.dumps(as_json).encode()}, {"Content-Type": "application/json"})
    form = parse_payload({"image": chelsea_png, "method": b"gradcam", "target": b"285"}, {})
    assert raw[0] == parsed[0] == unparsed[0] == form[0] == chelsea_png
    for _, options in (raw, parsed, unparsed, form):
        assert parse_options(options, DEFAULTS)[0].target == 285


def test_body_options_override_headers(chelsea_png):
    _, options = parse_payload({"image": chelsea_png, "method": b"contrastive"}, {"X-Explain-Method": "gradcam"})
    assert options["method"] == "contrastive"


@pytest.mark.parametrize(
    "fields, headers, message",
    [
        ({"body": b""}, {}, "body is empty"),
        ({}, {}, "no image"),
        ({"body": b'{"image": '}, {}, "not valid JSON"),
        ({"body": b"[1, 2]"}, {}, "must be an object"),
        ({"body": {"method": "gradcam"}}, {}, "no 'image' field"),
        ({"body": {"image": "***not base64***"}}, {}, "not valid base64"),
        ({"body": {"image": 12}}, {}, "must be a base64 string"),
    ],
)
def test_bad_bodies_say_what_is_wrong(fields, headers, message):
    with pytest.raises(ServingError) as error:
        parse_payload(fields, headers)
    assert error.value.status == 400 and message in error.value.message and error.value.valid


@pytest.mark.parametrize(
    "options, message, valid",
    [
        ({"method": "lime"}, "not supported by this model", "gradcam"),
        ({"method": "bcos"}, "not supported by this model", "none"),
        ({"colour": "red"}, "unknown option 'colour'", "method"),
        ({"topk": "many"}, "not an integer", "an integer from 1 to 100"),
        ({"topk": 0}, "out of range", "an integer from 1 to 100"),
        ({"outputs": "heatmap,sound"}, "known outputs", "overlay"),
        ({"method": "gradcam", "contrast": 285}, "takes no contrast", "method=contrastive"),
        ({"method": "gradcam", "weighting": "probability"}, "takes no weighting", "method=scorecam"),
        ({"method": "scorecam", "weighting": "loudest"}, "is not one of probability, channel_softmax", "channel_softmax"),
        ({"target": 2.5}, "not a class index or label", "a class index"),
        ({"method": "scorecam", "channels": "most"}, "'most' is not an integer", "all"),
        ({"method": "scorecam", "channels": 0}, "0 is out of range", "an integer >= 1"),
        ({"method": "gradcam", "channels": 8}, "takes no channels", "method=scorecam"),
        ({"method": "gradcam", "outputs": "heatmap,bcos_color"}, "method 'gradcam' does not make bcos_color", "values"),
        ({"method": "scorecam", "outputs": ["explanation_image"]}, "does not make explanation_image", "overlay"),
    ],
)
def test_bad_options_name_the_valid_values(options, message, valid, service, chelsea_png):
    # the whole preparation of a request: parsing, then the method's own options when resolved
    body = {"image": base64.b64encode(chelsea_png).decode(), **options}
    with pytest.raises(ServingError) as error:
        service._prepare(0, {"body": body}, {})
    assert error.value.status == 400 and message in error.value.message
    assert valid in error.value.valid


def test_default_options(service):
    request, options = parse_options({}, DEFAULTS)
    assert (request.method, request.target, options.topk, options.outputs) == ("gradcam", None, 5, ("heatmap",))
    assert request == ExplainRequest("gradcam")
    assert parse_options({"method": "none"}, DEFAULTS)[0] is None
    assert parse_options({"outputs": ["overlay", "values"]}, DEFAULTS)[1].outputs == ("overlay", "values")
    resolve = service.explainer.resolve
    assert resolve(parse_options({"method": "scorecam", "channels": "all"}, DEFAULTS)[0]).options.channels is None
    assert resolve(parse_options({"method": "scorecam", "channels": "32"}, DEFAULTS)[0]).options.channels == 32


# -- decoding ----------------------------------------------------------------------------------


def test_decode_accepts_jpeg_png_webp(photos):
    for fmt in ("JPEG", "PNG", "WEBP"):
        image = decode_image(encoded(photos["coffee"], fmt))
        assert image.mode == "RGB" and image.size == photos["coffee"].size


@pytest.mark.parametrize(
    "make, status, message",
    [
        (lambda im: b"", 400, "empty"),
        (lambda im: b"this is not an image at all", 400, "not an image"),
        (truncated_jpeg, 400, "truncated or corrupt"),
        (corrupt_jpeg, 400, "truncated or corrupt"),
        (gif, 415, "GIF is not supported"),
        (lambda im: png_bomb(6000, 6000), 413, "6000x6000 = 36,000,000 pixels; the limit is 25,000,000"),
        (lambda im: png_bomb(60_000, 60_000), 413, "decompression bomb"),
    ],
)
def test_bad_images_fail_before_costly_decoding(photos, make, status, message):
    with pytest.raises(ServingError) as error:
        decode_image(make(photos["chelsea"]))
    assert error.value.status == status and message in error.value.message, error.value.message


def test_pixel_limit_is_configurable(photos):
    with pytest.raises(ServingError, match="limit is 1,000"):
        decode_image(encoded(photos["chelsea"]), ImageLimits(max_pixels=1000))


# -- the service: one batch, one reply per request ------------------------------------------------


def _reply_json(reply):
    return reply.body


def test_response_schema_is_the_design_one(service, chelsea_png):
    (reply,) = service.handle([({"body": chelsea_png}, {"X-Explain-Outputs": "heatmap,overlay,values"})])
    assert reply.status == 200
    body = _reply_json(reply)
    assert set(body) == {"predictions", "explanation"}
    assert len(body["predictions"]) == 5 and body["predictions"][0]["index"] in CAT_CLASSES
    assert set(body["predictions"][0]) == {"index", "label", "probability"}
    explanation = body["explanation"]
    assert set(explanation) == {"method", "target", "contrast", "layer", "backend", "heatmap", "overlay", "values", "timing_ms"}
    assert explanation["backend"] == "torch:cpu"
    assert explanation["method"] == "gradcam" and explanation["contrast"] is None and explanation["layer"] == "head_act"
    assert explanation["target"]["index"] == body["predictions"][0]["index"]
    heatmap = explanation["heatmap"]
    assert heatmap["encoding"] == "png;base64"
    png = Image.open(io.BytesIO(base64.b64decode(heatmap["data"])))
    assert png.format == "PNG" and png.size == (heatmap["width"], heatmap["height"]) == (224, 224)
    assert explanation["overlay"]["encoding"] == "jpeg;base64"
    assert Image.open(io.BytesIO(base64.b64decode(explanation["overlay"]["data"]))).format == "JPEG"
    assert np.asarray(explanation["values"]["data"]).shape == (7, 7)
    assert set(explanation["timing_ms"]) == {"predict", "explain"}
    assert len(reply.text) < 200_000


def test_prediction_only(service, chelsea_png):
    (reply,) = service.handle([({"body": chelsea_png}, {"X-Explain-Method": "none", "X-Explain-Topk": "2"})])
    body = _reply_json(reply)
    assert reply.status == 200 and body["explanation"] is None and len(body["predictions"]) == 2


def test_contrast_equal_to_target_is_refused_by_index_or_label(service, chelsea_png):
    for target, contrast in ((285, 285), ("Egyptian cat", 285), ("285", "egyptian cat")):
        form = {"image": chelsea_png, "method": "contrastive", "target": target, "contrast": contrast}
        (reply,) = service.handle([(form, {})])
        assert reply.status == 400 and "equals the target" in _reply_json(reply)["error"]["message"]


def test_a_bad_request_fails_alone_in_its_batch(service, chelsea_png, photos):
    good = ({"body": chelsea_png}, {"X-Explain-Method": "contrastive", "X-Explain-Target": "281", "X-Explain-Contrast": "285"})
    requests = [
        good,
        ({"body": b"GIF89a nonsense"}, {}),
        ({"body": chelsea_png}, {"X-Explain-Target": "1000"}),
        ({"body": chelsea_png}, {"X-Explain-Target": "not a cat"}),
        ({"body": png_bomb()}, {}),
        ({"body": encoded(photos["coffee"])}, {"X-Explain-Method": "gradcam", "X-Explain-Target": "espresso"}),
    ]
    replies = service.handle(requests)
    assert [r.status for r in replies] == [200, 400, 400, 400, 413, 200]
    errors = [_reply_json(r)["error"] for r in replies[1:5]]
    assert "out of range" in errors[1]["message"] and "an integer from 0 to 999" in errors[1]["valid"][0]
    assert "unknown class label 'not a cat'" in errors[2]["message"]
    assert [e["code"] for e in errors] == [400, 400, 400, 413]
    assert _reply_json(replies[0])["explanation"]["target"] == {"index": 281, "label": "tabby"}
    assert _reply_json(replies[0])["explanation"]["contrast"] == {"index": 285, "label": "Egyptian cat"}
    assert _reply_json(replies[5])["explanation"]["target"]["label"] == "espresso"
    assert replies[1].error_kind == "not_an_image" and replies[0].method == "contrastive"


def test_each_request_in_a_batch_keeps_its_own_target(service, chelsea_png):
    targets = [281, 282, 285, 287, None]
    methods = ["gradcam", "contrastive", "gradcam", "contrastive", "none"]
    requests = [
        ({"body": chelsea_png}, {"X-Explain-Method": m, **({"X-Explain-Target": str(t)} if t else {})})
        for t, m in zip(targets, methods)
    ]
    replies = [_reply_json(r) for r in service.handle(requests)]
    for target, method, body in zip(targets[:4], methods[:4], replies):
        assert body["explanation"]["target"]["index"] == target and body["explanation"]["method"] == method
    assert replies[4]["explanation"] is None


def test_served_heatmap_is_the_engine_heatmap(service, chelsea_png, effnet, effnet_explainer):
    (reply,) = service.handle([({"body": chelsea_png}, {"X-Explain-Method": "contrastive", "X-Explain-Contrast": "285"})])
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(_reply_json(reply)["explanation"]["heatmap"]["data"]))))
    x = effnet.preprocess(decode_image(chelsea_png))[None]
    engine = effnet_explainer.explain(x, [ExplainRequest("contrastive", contrast=285)]).explanations[0].heatmap
    assert np.abs(served / 255.0 - engine).max() <= 1 / 255


def test_scorecam_channels_default_comes_from_the_config(chelsea_png):
    options = {"scorecam": {"channels": 8, "weighting": "channel_softmax"}}
    service = ExplainService(ServingConfig(model="efficientnet_lite0", method_options=options))
    prepared = service._prepare(0, {"body": chelsea_png}, {"X-Explain-Method": "scorecam"})
    assert (prepared.request.options.channels, prepared.request.options.weighting) == (8, "channel_softmax")
    prepared = service._prepare(0, {"body": chelsea_png}, {"X-Explain-Method": "scorecam", "X-Explain-Channels": "all"})
    assert prepared.request.options.channels is None
    (reply,) = service.handle([({"body": chelsea_png}, {"X-Explain-Method": "scorecam", "X-Explain-Target": "285"})])
    assert reply.status == 200 and reply.body["explanation"]["target"]["index"] == 285


def test_config_rejects_unknown_settings_and_methods():
    with pytest.raises(ValueError, match="unknown handler setting"):
        ServingConfig.from_dict({"model": "efficientnet_lite0", "colour": "red"})
    with pytest.raises(ValueError, match=r"scorecam_channels is gone: set method_options: \{scorecam: \{channels"):
        ServingConfig.from_dict({"model": "efficientnet_lite0", "scorecam_channels": 64})
    with pytest.raises(ValueError, match="does not support"):
        ExplainService(ServingConfig(model="efficientnet_lite0", methods=("bcos",)))


# -- the TorchServe base with a stand-in context (the real one: test_serving_torchserve.py) ---------


class _Context:
    def __init__(self, headers, yaml_config, model_dir="."):
        self.model_yaml_config = yaml_config
        self.system_properties = {"model_dir": model_dir}
        self.manifest = {"model": {"modelName": "efficientnet_lite0"}}
        self.headers = headers
        self.status, self.content_types = {}, {}
        self.metrics = None

    def get_all_request_header(self, index):
        return self.headers[index]

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = (code, phrase)

    def set_response_content_type(self, idx, value):
        self.content_types[idx] = value


def test_torchserve_handler_sets_a_status_per_request(chelsea_png):
    class Handler(TorchServeHandler):
        model = "efficientnet_lite0"

    headers = [{"X-Explain-Method": "contrastive"}, {"x-explain-method": "lime"}]
    context = _Context(headers, {"handler": {"default_method": "none", "methods": ["gradcam", "contrastive"]}})
    handler = Handler()
    handler.initialize(context)
    assert handler.service.config.default_method == "none"
    bodies = handler.handle([{"body": chelsea_png}, {"body": chelsea_png}], context)
    assert context.status == {1: (400, "Bad Request")}
    assert context.content_types == {0: "application/json", 1: "application/json"}
    assert json.loads(bodies[0])["explanation"]["method"] == "contrastive"
    assert json.loads(bodies[1])["error"]["valid"] == ["gradcam", "contrastive", "none"]


def test_the_whyserve_package_never_imports_torchserve():
    import subprocess
    import sys

    code = (
        "import sys, whyserve, whyserve.serving.torchserve, whyserve.serving.launcher, whyserve.cli; "
        "print(sorted(m for m in sys.modules if m == 'ts' or m.startswith('ts.')))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
