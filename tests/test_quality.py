"""The noisy-square flowers, the shipped flowers_quality regressor, and regression contrasts in
the engine and the protocol (in-process; the served archive: tests/test_quality_serving.py)."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from serving_helpers import ROOT, encoded
from whyserve import Explainer, ExplainRequest, load_model
from whyserve.data.flowers import make_flower
from whyserve.data.quality import MAX_SIGMA, REGION, generate, make_distorted
from whyserve.errors import InvalidOption
from whyserve.serving import envelopes
from whyserve.serving.protocol import RequestDefaults, ServingError, parse_options
from whyserve.serving.service import ExplainService, ServingConfig


def test_noise_lies_only_inside_the_square_and_has_the_labelled_strength():
    distorted = make_distorted(77, 3, strength=0.5)
    clean = make_flower(77, 3).image.astype(float)
    assert distorted.mask.sum() == REGION * REGION and distorted.area == 0.25
    rows, cols = np.nonzero(distorted.mask)
    assert rows.max() - rows.min() + 1 == REGION and cols.max() - cols.min() + 1 == REGION  # one square
    difference = distorted.image.astype(float) - clean
    assert np.all(difference[~distorted.mask] == 0)
    assert 0.85 * 0.5 * MAX_SIGMA < difference[distorted.mask].std() < 1.05 * 0.5 * MAX_SIGMA  # clipping lowers it a little
    assert np.array_equal(make_distorted(77, 3, strength=0.0).image, make_flower(77, 3).image)


def test_images_depend_only_on_seed_and_index():
    first, again = generate(3, seed=5), generate(5, seed=5)[:3]
    for a, b in zip(first, again):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.strength == b.strength
    strengths = [d.strength for d in generate(50, seed=6, low=0.2, high=0.4)]
    assert min(strengths) >= 0.2 and max(strengths) <= 0.4 and len(set(strengths)) == 50


@pytest.fixture(scope="module")
def explainer():
    return Explainer(load_model("flowers_quality"))


def batch(spec, items):
    return torch.stack([spec.preprocess(Image.fromarray(d.image)) for d in items])


def test_shipped_regressor_predicts_the_strength_on_unseen_images(explainer):
    items = generate(24, seed=4040)  # training used seeds 1 and 2
    predicted = explainer.predict(batch(explainer.spec, items))[:, 0].numpy()
    truth = np.array([d.strength for d in items])
    assert explainer.spec.task == "regression" and np.all((predicted >= 0) & (predicted <= 1))
    assert np.sqrt(np.mean((predicted - truth) ** 2)) < 0.1
    assert np.corrcoef(predicted, truth)[0, 1] > 0.9


@pytest.mark.parametrize(
    "contrast, message",
    [
        (math.nan, "not a finite number"),
        ("inf", "not a finite number"),
        (1.5, "outside"),
        (-0.1, "outside"),
        ("high", "not a number"),
    ],
)
def test_contrast_values_outside_the_output_range_are_refused(explainer, contrast, message):
    with pytest.raises(InvalidOption, match=message) as error:
        explainer.resolve(ExplainRequest("contrastive", contrast=contrast))
    assert error.value.option == "contrast" and error.value.valid == ["a number from 0 to 1"]


def test_bounds_are_valid_contrasts_and_a_classifier_refuses_a_value(explainer):
    assert explainer.resolve(ExplainRequest("contrastive", contrast=0)).contrast == 0.0
    assert explainer.resolve(ExplainRequest("contrastive", contrast="1")).contrast == 1.0
    with pytest.raises(InvalidOption, match="not a class index or label"):
        Explainer(load_model("flowers_cnn")).resolve(ExplainRequest("contrastive", contrast=0.5))


def test_contrast_below_the_prediction_gives_the_gradcam_map(explainer):
    """One output: dJ/dA = 2 (y - q) dy/dA, so any q below y gives Grad-CAM's map (a positive
    factor, removed by the min-max) and any q above y the map of -dy/dA."""
    distorted = make_distorted(4041, 0, strength=0.7)
    x = batch(explainer.spec, [distorted]).repeat(4, 1, 1, 1)
    y = float(explainer.predict(x[:1])[0, 0])
    contrasts = (y - 0.3, 0.0, min(1.0, y + 0.2))
    requests = [ExplainRequest("gradcam"), *(ExplainRequest("contrastive", contrast=q) for q in contrasts)]
    maps = [e.heatmap for e in explainer.explain(x, requests).explanations]
    assert np.abs(maps[1] - maps[0]).max() < 1e-5 and np.abs(maps[2] - maps[0]).max() < 1e-5
    assert np.abs(maps[3] - maps[0]).max() > 0.5


def test_a_json_number_reaches_the_engine_as_a_contrast_value():
    request, _ = parse_options({"method": "contrastive", "contrast": 0.75}, RequestDefaults())
    assert request.contrast == 0.75
    with pytest.raises(ServingError) as error:
        parse_options({"method": "contrastive", "contrast": True}, RequestDefaults())
    assert error.value.status == 400 and "a number (regression models)" in error.value.valid


def test_regression_predictions_are_the_values(explainer):
    items = generate(2, seed=4042)
    result = explainer.explain(batch(explainer.spec, items), [None, None])
    values = result.values(1, explainer.spec.class_names)
    assert values == [{"index": 0, "label": "noise strength", "value": pytest.approx(float(result.logits[1, 0]))}]


def test_kserve_v2_outputs_carry_the_predicted_value():
    config = yaml.safe_load((ROOT / "archives" / "flowers_quality" / "model-config.yaml").read_text())["handler"]
    service = ExplainService(ServingConfig.from_dict(config))
    image = base64.b64encode(encoded(Image.fromarray(make_distorted(4043, 0, strength=0.4).image))).decode("ascii")
    inputs = [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [image]}]
    (reply,) = envelopes.answer(service, [envelopes.v2_request(inputs, {"method": "contrastive", "contrast": "0.9"})])
    assert reply.status == 200, reply.body
    outputs = envelopes.v2_outputs(reply)
    assert [o.name for o in outputs] == ["topk_index", "topk_value", "topk_label", "heatmap", "explanation"]
    assert abs(outputs[1].data[0] - 0.4) < 0.15
    assert envelopes.v2_response(outputs) == reply.body
