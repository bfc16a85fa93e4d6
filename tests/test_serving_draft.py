"""JPEG draft decoding (issue 15): a JPEG much larger than the model's resize target is decoded
by libjpeg at 1/2, 1/4 or 1/8 scale, never below that target; the hardening checks (truncated
data, EXIF orientation) still hold, and prediction and heatmap stay those of the full decode."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from PIL import Image
from test_serving_images import rotated_with_exif

from serving_helpers import encoded
from whyserve import ExplainRequest
from whyserve.serving.errors import ServingError
from whyserve.serving.images import ImageLimits, decode_image, resize_rule

LARGE = (4000, 3000)  # EfficientNet-Lite0 resizes it to 341x256: libjpeg can decode it at 1/8, 500x375
WHOLE = ImageLimits(max_resized_pixels=LARGE[0] * LARGE[1])  # without a resize rule: no draft, the full decode


@pytest.fixture(scope="module")
def effnet_resize(effnet):
    return resize_rule(effnet.view)


@pytest.fixture(scope="module")
def large(photos):
    return photos["chelsea"].resize(LARGE, Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def large_jpeg(large):
    return encoded(large, "JPEG", quality=90)


@pytest.mark.parametrize("size, decoded", [(LARGE, (500, 375)), ((1200, 900), (600, 450)), ((451, 300), (451, 300))])
def test_decoded_at_the_coarsest_scale_that_keeps_the_resize_target(photos, effnet_resize, size, decoded):
    data = encoded(photos["chelsea"].resize(size, Image.Resampling.BICUBIC), "JPEG", quality=90)
    assert decode_image(data, resized=effnet_resize).size == decoded
    assert decode_image(data, WHOLE).size == size  # without the model's resize rule: the full decode


def test_png_is_decoded_whole(large, effnet_resize):
    assert decode_image(encoded(large.resize((2000, 1500))), resized=effnet_resize).size == (2000, 1500)


def test_prediction_and_heatmap_equal_the_full_decode(large_jpeg, effnet, effnet_explainer, effnet_resize):
    full, draft = decode_image(large_jpeg, WHOLE), decode_image(large_jpeg, resized=effnet_resize)
    assert draft.size == (500, 375)  # the draft path was taken
    x = torch.stack([effnet.preprocess(full), effnet.preprocess(draft)])
    result = effnet_explainer.explain(x, [ExplainRequest("gradcam"), ExplainRequest("gradcam")])
    assert result.topk(0, 1, effnet.class_names)[0]["index"] == result.topk(1, 1, effnet.class_names)[0]["index"]
    maps = [result.explanations[row].heatmap.ravel() for row in (0, 1)]
    assert np.corrcoef(*maps)[0, 1] >= 0.99


def test_exif_orientation_is_applied_before_the_draft_target(large, large_jpeg, effnet_resize):
    upright = decode_image(large_jpeg, resized=effnet_resize)
    turned = decode_image(rotated_with_exif(large, "JPEG"), resized=effnet_resize)
    assert turned.size == upright.size == (500, 375)
    difference = np.abs(np.asarray(turned, dtype=float) - np.asarray(upright, dtype=float)).mean()
    assert difference < 3.0, difference


def _refused(data: bytes, resized) -> None:
    with pytest.raises(ServingError) as error:
        decode_image(data, resized=resized)
    assert error.value.status == 400 and "truncated or corrupt" in error.value.message, error.value.message


def test_truncated_large_jpeg_is_refused_on_the_draft_path(large_jpeg, effnet_resize):
    _refused(large_jpeg[: len(large_jpeg) // 2] + b"\xff\xd9", effnet_resize)
    _refused(large_jpeg[: len(large_jpeg) - 4000] + b"\xff\xd9", effnet_resize)  # only the last rows missing


def test_large_jpeg_whose_header_claims_more_rows_is_refused_on_the_draft_path(large_jpeg, effnet_resize):
    sof = large_jpeg.find(b"\xff\xc0")
    height, width = struct.unpack(">HH", large_jpeg[sof + 5 : sof + 9])
    _refused(large_jpeg[: sof + 5] + struct.pack(">HH", height + 64, width) + large_jpeg[sof + 9 :], effnet_resize)
