"""End to end: the real archive in a real TorchServe 0.12, over HTTP with ``requests``.

One server for the module (batchSize 4, maxBatchDelay 150 ms so concurrent requests share
batches) on free loopback ports, with its own model store, TMPDIR and logs.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from conftest import CAT_CLASSES
from serving_helpers import (
    MODEL,
    as_json,
    concurrently,
    corrupt_jpeg,
    encoded,
    multipart,
    png_bomb,
    post,
    raw,
    start_server,
    truncated_jpeg,
    worker_pids,
)
from whyserve import ExplainRequest
from whyserve.serving import decode_image
from whyserve.serving.images import ImageLimits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ts = start_server(tmp_path_factory, "local.properties", ("--batch-size", "4", "--max-batch-delay", "150"))
    yield ts
    ts.stop()


@pytest.fixture(scope="module")
def chelsea(chelsea_png):
    return chelsea_png


def heatmap(body: dict) -> np.ndarray:
    stated = body["explanation"]["heatmap"]
    png = Image.open(io.BytesIO(base64.b64decode(stated["data"])))
    assert png.format == "PNG" and png.mode == "L"
    assert png.size == (stated["width"], stated["height"]) == (224, 224)
    return np.asarray(png, dtype=np.float64) / 255.0


def test_chelsea_is_a_cat_with_a_gradcam_heatmap(url, chelsea, first_pids):
    response = post(url, raw(chelsea, method="gradcam"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["predictions"][0]["index"] in CAT_CLASSES
    assert body["explanation"]["method"] == "gradcam"
    assert body["explanation"]["target"]["index"] == body["predictions"][0]["index"]
    heatmap(body)
    assert len(response.content) < 100_000


def test_json_multipart_and_raw_give_the_same_answer(url, chelsea):
    options = {"method": "contrastive", "target": "tabby", "contrast": 285, "topk": 3}
    bodies = [post(url, make(chelsea, **options)).json() for make in (raw, as_json, multipart)]
    for body in bodies:
        assert [p["index"] for p in body["predictions"]] == [p["index"] for p in bodies[0]["predictions"]]
        assert np.allclose(
            [p["probability"] for p in body["predictions"]], [p["probability"] for p in bodies[0]["predictions"]], atol=1e-5
        )
        assert body["explanation"]["target"] == {"index": 281, "label": "tabby"}
        assert body["explanation"]["contrast"] == {"index": 285, "label": "Egyptian cat"}
        assert np.abs(heatmap(body) - heatmap(bodies[0])).max() <= 1 / 255


def test_fast_scorecam_is_served(url, chelsea):
    response = post(url, as_json(chelsea, method="scorecam", channels=16, target=285))
    assert response.status_code == 200, response.text
    assert response.json()["explanation"]["method"] == "scorecam"
    assert heatmap(response.json()).max() == 1.0


def test_explanations_endpoint_answers_with_the_same_schema(server, chelsea):
    response = post(f"{server.inference_url}/explanations/{MODEL}", raw(chelsea, target=285))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"predictions", "explanation"} and body["explanation"]["target"]["index"] == 285


def test_each_request_in_a_batch_keeps_its_own_target(url, chelsea, photos):
    coffee = encoded(photos["coffee"], "JPEG", quality=90)
    cases = [
        (raw, chelsea, {"method": "gradcam", "target": 281}),
        (as_json, chelsea, {"method": "contrastive", "target": 282, "contrast": 285}),
        (multipart, coffee, {"method": "gradcam", "target": "espresso"}),
        (raw, coffee, {"method": "none"}),
        (as_json, chelsea, {"method": "gradcam", "target": "Egyptian cat"}),
        (multipart, chelsea, {"method": "contrastive", "target": 287}),
        (raw, coffee, {"method": "gradcam", "target": 967}),
        (as_json, chelsea, {"method": "gradcam"}),
    ]
    responses = concurrently(url, [make(image, **options) for make, image, options in cases])
    expected = [281, 282, 967, None, 285, 287, 967, None]
    for (_make, _image, options), want, response in zip(cases, expected, responses):
        assert response.status_code == 200, response.text
        body = response.json()
        if options["method"] == "none":
            assert body["explanation"] is None
            continue
        assert body["explanation"]["method"] == options["method"]
        got = body["explanation"]["target"]["index"]
        assert got == (want if want is not None else body["predictions"][0]["index"]), (options, got)
        heatmap(body)


def test_bad_inputs_fail_alone_and_the_worker_survives(server, url, chelsea, photos, first_pids):
    bad = [
        (raw(b""), 400, "empty"),
        (raw(b"definitely not an image"), 400, "not an image"),
        (raw(truncated_jpeg(photos["chelsea"])), 400, "truncated or corrupt"),
        (raw(corrupt_jpeg(photos["chelsea"])), 400, "truncated or corrupt"),
        (raw(png_bomb()), 413, "decompression bomb"),
        (raw(png_bomb(6000, 6000)), 413, "the limit is 25,000,000"),
        (raw(chelsea, method="lime"), 400, "not supported by this model"),
        (raw(chelsea, method="bcos"), 400, "not supported by this model"),
        (raw(chelsea, target=1000), 400, "out of range"),
        (multipart(chelsea, target="not a cat"), 400, "unknown class label"),
        (as_json(chelsea, method="contrastive", contrast=99999), 400, "out of range"),
        (as_json(chelsea, method="contrastive", target=285, contrast="Egyptian cat"), 400, "equals the target"),
        ({"data": b'{"image": "abc', "headers": {"Content-Type": "application/json"}}, 400, "not valid JSON"),
        ({"json": {"picture": "abc"}}, 400, "no 'image' field"),
        (as_json(chelsea, colour="red"), 400, "unknown option 'colour'"),
        (as_json(chelsea, topk=0), 400, "topk"),
    ]
    for start in range(0, len(bad), 3):  # batchSize 4: three bad ones and a good one at a time
        group = bad[start : start + 3]
        responses = concurrently(url, [request for request, _, _ in group] + [raw(chelsea, method="contrastive")])
        for (_request, status, message), response in zip(group, responses):
            assert response.status_code == status, (message, response.text)
            error = response.json()["error"]
            assert error["code"] == status and message in error["message"], error
            assert isinstance(error["valid"], list) and error["valid"], error
        assert responses[-1].status_code == 200, responses[-1].text
        assert responses[-1].json()["explanation"]["method"] == "contrastive"
    assert post(url, raw(chelsea)).status_code == 200
    assert worker_pids(server) == first_pids  # the same workers answered everything


def test_served_heatmap_equals_the_engine_heatmap(url, chelsea, effnet, effnet_explainer):
    for options in ({"method": "gradcam"}, {"method": "contrastive", "target": 281, "contrast": 285}):
        served = heatmap(post(url, raw(chelsea, **options)).json())
        request = ExplainRequest(options["method"], options.get("target"), options.get("contrast"))
        x = effnet.preprocess(decode_image(chelsea))[None]
        engine = effnet_explainer.explain(x, [request]).explanations[0].heatmap
        assert np.abs(served - engine).max() <= 1 / 255, options


def test_model_api_is_off_and_management_describes(server):
    assert requests.post(f"{server.management_url}/models", params={"url": "x.mar"}, timeout=10).status_code == 405
    assert requests.delete(f"{server.management_url}/models/{MODEL}", timeout=10).status_code == 405


def test_whyserve_client_writes_the_overlay(url, tmp_path, capsys):
    from whyserve.cli import main

    assert (
        main(["client", "chelsea", "--url", url, "--method", "contrastive", "--contrast", "Egyptian cat", "--out", str(tmp_path)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "contrastive: why" in printed and "rather than Egyptian cat?" in printed
    overlay = Image.open(tmp_path / "chelsea_overlay.png")
    assert overlay.format == "PNG" and overlay.width > 224  # the 224 crop plus a colour bar
    assert Image.open(tmp_path / "chelsea_heatmap.png").size == (224, 224)
    assert main(["client", "chelsea", "--url", url, "--target", "9999", "--out", str(tmp_path)]) == 1
    assert "HTTP 400: target: class index 9999 is out of range" in capsys.readouterr().err


def test_fgvis_in_a_mixed_batch_keeps_each_target(url, chelsea):
    cases = [
        raw(chelsea, method="fgvis", target=281, iterations=3),
        as_json(chelsea, method="gradcam", target=285),
        multipart(chelsea, method="fgvis", target=282, game="preservation", iterations=3, outputs="heatmap,explanation_image"),
        raw(chelsea, method="fgvis", iterations=2, defense="off"),
    ]
    responses = concurrently(url, cases)
    for response in responses:
        assert response.status_code == 200, response.text
    bodies = [r.json() for r in responses]
    targets = [b["explanation"]["target"]["index"] for b in bodies]
    assert targets == [281, 285, 282, bodies[3]["predictions"][0]["index"]]
    assert [b["explanation"]["method"] for b in bodies] == ["fgvis", "gradcam", "fgvis", "fgvis"]
    details = [bodies[i]["explanation"]["details"] for i in (0, 2, 3)]
    assert [d["game"] for d in details] == ["deletion", "preservation", "deletion"]
    assert [d["defense"] for d in details] == [True, True, False]
    assert all(d["iterations"] <= 3 and 0 <= d["probability"] <= 1 for d in details)
    assert bodies[2]["explanation"]["explanation_image"]["width"] == 224
    for body in bodies:
        heatmap(body)


def test_large_jpeg_is_served_and_each_reply_says_where_its_time_went(url, photos, effnet):
    """A 4000x3000 JPEG takes the draft path (decoded at 1/8) and gets the top-1 of its full
    decode; the Server-Timing header names the handler's stages in ms (benchmarks/served_breakdown.py)."""
    large = encoded(photos["chelsea"].resize((4000, 3000), Image.Resampling.BICUBIC), "JPEG", quality=90)
    big = post(url, raw(large, method="gradcam"))
    assert big.status_code == 200, big.text
    with torch.no_grad():
        full = effnet.module(effnet.preprocess(decode_image(large, ImageLimits(max_resized_pixels=12_000_000)))[None])
    assert big.json()["predictions"][0]["index"] == int(full.argmax())
    stages = dict(part.strip().split(";dur=") for part in big.headers["Server-Timing"].split(","))
    assert list(stages) == ["decode", "resize", "normalize", "engine", "encode"]
    assert all(float(ms) >= 0 for ms in stages.values())
