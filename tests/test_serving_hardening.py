"""Issue 8's reproductions through the service layer (in-process, the code every adapter
calls): each input class its own case with the status and the message; cost control and the
load-time checks of limits against the server's."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from test_serving_images import rotated_with_exif

from serving_helpers import encoded
from whyserve import ExplainRequest
from whyserve.serving.bodies import MAX_JSON_DEPTH
from whyserve.serving.cost import Budget, Calibration, ServerLimits, calibrate, check_response_size, check_timeout

JSON = {"Content-Type": "application/json"}


def answer(service, fields, headers=None) -> tuple[int, dict]:
    (reply,) = service.handle([(fields, headers or {})])
    return reply.status, reply.body


def refused(service, fields, headers, status: int, message: str) -> dict:
    got, body = answer(service, fields, headers)
    assert got == status and message in body["error"]["message"], body
    assert body["error"]["code"] == status and body["error"]["valid"], body
    return body["error"]


def heatmap(body: dict) -> np.ndarray:
    data = base64.b64decode(body["explanation"]["heatmap"]["data"])
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)


# -- 1. aspect-ratio bomb -----------------------------------------------------------------------


def test_aspect_ratio_bomb_gets_413_naming_the_limit(service):
    error = refused(service, {"body": encoded(Image.new("RGB", (20_000, 1)))}, {}, 413, "aspect ratio of 20,000.0")
    assert "of 20" in error["message"]


# -- 2. several images in one multipart form ------------------------------------------------------


def test_multipart_with_two_image_parts_is_refused(service, chelsea_png, photos):
    other = encoded(photos["coffee"])
    # TorchServe keeps the last part of a repeated name; the Content-Length still counts both.
    length = len(chelsea_png) + len(other) + 400
    headers = {"Content-Type": "multipart/form-data; boundary=abc123", "Content-Length": str(length)}
    refused(service, {"image": other}, headers, 400, "one image per request")
    refused(service, {"image": [chelsea_png, other]}, {}, 400, "2 'image' parts")  # a server that keeps both
    headers["Content-Length"] = str(len(chelsea_png) + 300)
    assert answer(service, {"image": chelsea_png}, headers)[0] == 200  # one part: fine


# -- 3. right answers, not silently wrong ones ------------------------------------------------------


def test_exif_rotated_chelsea_gets_the_upright_prediction_and_heatmap(service, photos, chelsea_png):
    status, upright = answer(service, {"body": chelsea_png})
    status_turned, turned = answer(service, {"body": rotated_with_exif(photos["chelsea"])})
    assert status == status_turned == 200
    assert turned["predictions"][0]["index"] == upright["predictions"][0]["index"]
    assert np.corrcoef(heatmap(turned).ravel(), heatmap(upright).ravel())[0, 1] >= 0.99
    stored_only = encoded(photos["chelsea"].transpose(Image.Transpose.ROTATE_90))  # the same pixels, no EXIF
    assert np.corrcoef(heatmap(answer(service, {"body": stored_only})[1]).ravel(), heatmap(upright).ravel())[0, 1] < 0.9


def test_16_bit_and_8_bit_grey_give_the_same_top1(service, photos):
    grey = np.asarray(photos["chelsea"].convert("L"))
    eight = answer(service, {"body": encoded(Image.fromarray(grey))})[1]
    sixteen_image = Image.fromarray(grey.astype(np.uint16) * 257)
    assert sixteen_image.mode == "I;16"
    sixteen = answer(service, {"body": encoded(sixteen_image)})[1]
    assert sixteen["predictions"][0]["index"] == eight["predictions"][0]["index"]
    assert abs(sixteen["predictions"][0]["probability"] - eight["predictions"][0]["probability"]) < 1e-3


def test_transparent_pixels_are_classified_as_shown(service, photos):
    hidden = photos["chelsea"].convert("RGBA")
    hidden.putalpha(0)  # a fully transparent picture of a cat: a viewer shows white
    white = answer(service, {"body": encoded(Image.new("RGB", hidden.size, (255, 255, 255)))})[1]
    shown = answer(service, {"body": encoded(hidden)})[1]
    assert shown["predictions"] == white["predictions"]


def test_truncated_jpeg_with_end_marker_gets_400(service, photos):
    data = encoded(photos["chelsea"], "JPEG", quality=90)
    refused(service, {"body": data[: len(data) // 2] + b"\xff\xd9"}, {}, 400, "truncated or corrupt")


def test_outputs_naming_nothing_gets_400(service, chelsea_png):
    refused(service, {"body": chelsea_png}, {"X-Explain-Outputs": ","}, 400, "outputs")


# -- 4. 500s that must be 4xx ---------------------------------------------------------------------


@pytest.mark.parametrize("number", [-1, 42.5, 100000000000, True])
def test_json_scalar_body_gets_400(service, number):
    refused(service, {"body": number}, JSON, 400, "must be an object")  # TorchServe decoded it
    refused(service, {"body": json.dumps(number).encode()}, JSON, 400, "must be an object")


def test_json_string_body_gets_400_saying_so(service):
    refused(service, {"body": "abc"}, JSON, 400, "must be an object, not a string")  # TorchServe decoded '"abc"'


def test_deep_json_gets_400_without_recursion_errors(service, chelsea_png):
    image = base64.b64encode(chelsea_png).decode()
    deep = b"[" * 10_000 + b"]" * 10_000
    refused(service, {"body": deep}, JSON, 400, f"10000 levels deep; the limit is {MAX_JSON_DEPTH}")
    inside = b'{"image": "' + image.encode() + b'", "target": ' + deep + b"}"
    refused(service, {"body": inside}, JSON, 400, "10001 levels deep")
    decoded = {"image": image, "target": json.loads("[" * 100 + "]" * 100)}
    refused(service, {"body": decoded}, JSON, 400, "101 levels deep")
    brackets_in_a_string = {"image": image, "target": "[" * 100}
    assert answer(service, {"body": brackets_in_a_string}, JSON)[0] == 400  # an unknown label, not a depth


@pytest.mark.parametrize(
    "target, message",
    [
        ("9" * 5000, "is not an integer"),
        (int("9" * 4000), "integer of 4000 digits"),
        ("²", "unknown class label"),
        ("-3", "out of range"),
    ],
)
def test_targets_are_parsed_with_bounds(service, chelsea_png, target, message):
    refused(service, {"body": {"image": base64.b64encode(chelsea_png).decode(), "target": target}}, JSON, 400, message)


def test_huge_json_integer_gets_400(service, chelsea_png):
    raw = b'{"image": "' + base64.b64encode(chelsea_png) + b'", "target": ' + b"9" * 5000 + b"}"
    refused(service, {"body": raw}, JSON, 400, "not valid JSON")


@pytest.mark.parametrize("value", ["9" * 5000, "²", "1.5"])
def test_topk_and_channels_are_parsed_with_bounds(service, chelsea_png, value):
    refused(service, {"body": chelsea_png}, {"X-Explain-Topk": value}, 400, "topk")
    refused(service, {"body": chelsea_png}, {"X-Explain-Method": "scorecam", "X-Explain-Channels": value}, 400, "channels")


@pytest.mark.parametrize(
    "options",
    [
        {"method": "x" * 3_000_000},
        {"method": "scorecam", "channels": "x" * 3_000_000},
        {"target": '"' * 3_000_000},  # JSON escaping would double it
        {"x" * 3_000_000: 1},
    ],
    ids=["method", "channels", "target", "option name"],
)
def test_huge_option_values_get_a_short_400(service, chelsea_png, options):
    fields = {"body": json.dumps({"image": base64.b64encode(chelsea_png).decode(), **options}).encode()}
    (reply,) = service.handle([(fields, JSON)])
    assert reply.status == 400 and len(reply.text) < 2000, (reply.status, len(reply.text))
    message = reply.body["error"]["message"]
    assert "(cut: 3,0" in message or "xxx... is not an integer" in message  # cut by the error, or by the option parser


def test_base64_with_line_breaks_and_spaces_works(service, chelsea_png):
    wrapped = base64.encodebytes(chelsea_png).decode()  # 76 characters a line, as `base64` prints
    assert "\n" in wrapped
    status, body = answer(service, {"body": {"image": wrapped.replace("\n", "\n  ")}}, JSON)
    assert status == 200, body
    status, data_url = answer(service, {"body": {"image": "data:image/png;base64," + wrapped}}, JSON)
    assert status == 200 and data_url["predictions"] == body["predictions"]


# -- 5. cost control ---------------------------------------------------------------------------------


def test_score_cam_cost_is_counted_in_forward_passes(service):
    def cost(request):
        return service.explainer.cost(service.explainer.resolve(request))

    assert cost(ExplainRequest("scorecam", channels="all")) == 1281
    assert cost(ExplainRequest("scorecam", channels=64)) == 66  # + the target ranking's pass
    assert cost(ExplainRequest("scorecam", channels=64, ranking="spread")) == 65
    assert cost(ExplainRequest("scorecam", channels=5000)) == 1281
    assert cost(ExplainRequest("gradcam")) < 10


def test_calibration_measures_the_model(service):
    calibration = calibrate(service.explainer, 8, repeats=1)
    assert 0 < calibration.forward_s < 30


def test_exact_score_cam_over_budget_gets_422_naming_the_cheaper_options(service, chelsea_png, monkeypatch):
    budget = Budget(1.0, Calibration(forward_s=0.01), "efficientnet_lite0_exact")  # 10 ms a forward
    monkeypatch.setattr(budget, "observe", lambda forward_s: None)  # keep the 10 ms of this test
    monkeypatch.setattr(service, "budget", budget)
    headers = {"X-Explain-Method": "scorecam", "X-Explain-Channels": "all"}
    error = refused(service, {"body": chelsea_png}, headers, 422, "1,281 forward passes = 12.8 s")
    assert "budget is 1 s per request (about 100 forward passes)" in error["message"]
    assert error["valid"] == [
        "channels: 64 (fast Score-CAM)",
        "the model efficientnet_lite0_exact (its own worker and timeout for exact methods)",
    ]
    assert answer(service, {"body": chelsea_png}, {"X-Explain-Method": "scorecam", "X-Explain-Channels": "64"})[0] == 200
    assert answer(service, {"body": chelsea_png}, {"X-Explain-Method": "gradcam"})[0] == 200


def test_budget_follows_the_forward_time_of_live_batches(service, chelsea_png, monkeypatch):
    monkeypatch.setattr(service, "budget", Budget(100.0, Calibration(forward_s=5.0)))  # as if loaded while busy
    assert answer(service, {"body": chelsea_png}, {"X-Explain-Method": "gradcam"})[0] == 200
    assert service.budget.calibration.forward_s != 5.0  # the live batch was taken into account
    budget = Budget(100.0, Calibration(forward_s=5.0))
    budget.observe(0.1)
    assert budget.calibration == Calibration(forward_s=0.8 * 5.0 + 0.2 * 0.1)


def test_a_batch_mixing_gradient_methods_and_score_cam_runs_once(service, chelsea_png, caplog):
    replies = service.handle(
        [
            (
                {"body": chelsea_png},
                {"X-Explain-Method": m, "X-Explain-Channels": "8"} if m == "scorecam" else {"X-Explain-Method": m},
            )
            for m in ("gradcam", "scorecam", "contrastive")
        ]
    )
    assert [r.status for r in replies] == [200, 200, 200]
    assert "retrying one request at a time" not in caplog.text  # the batch did not fail as a whole


def test_load_fails_when_limits_do_not_fit_the_server():
    with pytest.raises(ValueError, match="must be below TorchServe's max_response_size"):
        check_response_size(7_000_000, ServerLimits(max_response_size=6_553_500))
    check_response_size(1_000_000, ServerLimits(max_response_size=6_553_500))
    calibration = Calibration(forward_s=0.01)
    exact = [3.0, 1281.0]  # forward passes of Grad-CAM and of exact Score-CAM: 12.8 s
    with pytest.raises(ValueError, match=r"a batch of 8 .* 102 s .* over 80% of its responseTimeout of 120 s"):
        check_timeout(Budget(None, calibration), exact, ServerLimits(batch_size=8, response_timeout_s=120))
    check_timeout(Budget(None, calibration), exact, ServerLimits(batch_size=1, response_timeout_s=120))
    check_timeout(Budget(5.0, calibration), exact, ServerLimits(batch_size=8, response_timeout_s=120))  # 40 s: fits
