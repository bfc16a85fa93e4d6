"""VEBI (whyserve.vebi, whyserve.methods.vebi): fitting, the relevance file, explanations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from whyserve.data.flowers import make_flower, make_single_part_flower
from whyserve.methods import vebi
from whyserve.models import load_model
from whyserve.vebi.features import conv_layers
from whyserve.vebi.fit import Relevance, fit, relevance_path
from whyserve.vebi_fit import training_images


@pytest.fixture(scope="module")
def cnn():
    return load_model("flowers_cnn")


def test_default_layers_are_every_conv_after_its_relu(cnn):
    assert conv_layers(cnn.module, cnn.input_size) == ("blocks.0.2", "blocks.1.2", "blocks.2.2", "blocks.3.2")


def test_fitting_is_deterministic_and_the_file_round_trips(cnn, tmp_path):
    x, y = training_images("flowers_cnn", 48, seed=11, classes=8)
    first = fit(cnn, x, y, mu=5.0, iterations=300)
    x2, y2 = training_images("flowers_cnn", 48, seed=11, classes=8)
    second = fit(cnn, x2, y2, mu=5.0, iterations=300)
    assert torch.equal(first.weights, second.weights)
    assert (first.weights.abs().sum(1) <= 5.0 + 1e-9).all()
    assert 0 < (first.weights != 0).sum() < first.weights.numel() / 2  # sparse, not empty
    loaded = Relevance.load(first.save(tmp_path / "r.json"))
    assert loaded.index == first.index and loaded.mu == 5.0
    torch.testing.assert_close(loaded.weights, first.weights, atol=1e-7, rtol=0)


@pytest.mark.parametrize("model", ["flowers_cnn", "flowers_part"])
def test_shipped_relevance_files_name_real_channels_of_their_model(model):
    spec = load_model(model)
    data = json.loads(relevance_path(model).read_text())
    relevance = Relevance.load(relevance_path(model))
    assert relevance.model == model and len(data["classes"]) == len(spec.class_names)
    modules = dict(spec.module.named_modules())
    assert all(layer in modules for layer in relevance.index.layers)
    assert all(relevance.relevant(c) for c in range(len(spec.class_names)))  # every class has features


def test_relevance_is_x_times_w_over_sum_w_with_x_l2_normalised():
    from whyserve.vebi.features import FeatureIndex

    relevance = Relevance("m", FeatureIndex(("a",), (3,)), torch.tensor([[1.0, -1.0, 2.0]], dtype=torch.float64), 5.0, {})
    r = vebi.relevances(relevance, torch.tensor([[3.0, 0.0, 4.0]]), [0])
    torch.testing.assert_close(r, torch.tensor([[0.6 * 1 / 2, 0.0, 0.8 * 2 / 2]], dtype=torch.float64))
    assert [f.channel for f in vebi.top_features(relevance, r[0], 3)] == [2, 0]  # the zero one is not positive


@pytest.mark.parametrize("model, make", [("flowers_cnn", make_flower), ("flowers_part", make_single_part_flower)])
def test_explanation_lists_positive_sorted_features_and_maps_the_flower(model, make):
    spec = load_model(model)
    relevance = Relevance.load(relevance_path(model))
    flowers = [make(4243, i, label=i % len(spec.class_names)) for i in range(4)]
    images = torch.stack([spec.normalize(spec.view(Image.fromarray(f.image))) for f in flowers])
    results = vebi.explain(spec.module, relevance, images, [f.label for f in flowers], k=3)
    for f, (heatmap, features) in zip(flowers, results):
        assert heatmap.shape == (96, 96) and heatmap.dtype == np.float32
        assert heatmap.min() >= 0 and heatmap.max() == pytest.approx(1.0)
        assert 1 <= len(features) <= 3
        values = [feature.relevance for feature in features]
        assert all(v > 0 for v in values) and values == sorted(values, reverse=True)
        relevant = {(layer, ch) for layer, ch, w in relevance.relevant(f.label)}
        assert all((feature.layer, feature.channel) in relevant for feature in features)
        # the map's energy lies on the flower well above the flower's share of the image
        assert heatmap[f.flower_mask].sum() / heatmap.sum() > 1.5 * f.flower_mask.mean()


def test_vebi_through_the_engine_equals_the_method_and_shares_a_batch_with_gradcam():
    from whyserve.engine import Explainer, ExplainRequest

    spec = load_model("flowers_part")
    flowers = [make_single_part_flower(4244, i, label=i) for i in range(3)]
    images = torch.stack([spec.normalize(spec.view(Image.fromarray(f.image))) for f in flowers])
    requests = [
        ExplainRequest("vebi", target=0),
        ExplainRequest("gradcam", target=1),
        ExplainRequest("vebi", target=2, features=2),
    ]
    result = Explainer(spec).explain(images, requests)
    direct = vebi.explain(spec.module, Relevance.load(relevance_path("flowers_part")), images[[0, 2]], [0, 2])
    for row, (heatmap, features) in zip((0, 2), direct):
        explanation = result.explanations[row]
        np.testing.assert_allclose(explanation.heatmap, heatmap, atol=1e-6)
        k = 3 if row == 0 else 2
        assert explanation.artifacts["features"] == [f.to_json() for f in features[:k]]
    assert result.explanations[1].method == "gradcam" and result.explanations[1].artifacts == {}


def test_vebi_on_a_model_without_relevance_file_names_the_models_with_one():
    from whyserve.engine import Explainer, ExplainRequest
    from whyserve.errors import InvalidOption

    with pytest.raises(InvalidOption, match="models with one: flowers_cnn, flowers_part"):
        Explainer(load_model("flowers_bcos")).resolve(ExplainRequest("vebi"))


@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference_mode"])
def test_vebi_leaves_the_model_as_found(mode):
    from test_model_state import _state

    from whyserve.engine import Explainer, ExplainRequest

    spec = load_model("flowers_part")
    model = spec.module
    model.train()  # a caller that left the model training
    model.blocks[0][0].weight.requires_grad_(False)
    user_hook = model.blocks[1].register_forward_hook(lambda *args: None)
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    context = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[mode]
    try:
        with context():
            before = _state(model)
            result = Explainer(spec).explain(images, [ExplainRequest("vebi", 0), ExplainRequest("vebi")])
            after = _state(model)
        assert after == before
        model.eval()  # explained in eval mode although left training: the same map as in eval
        again = Explainer(spec).explain(images, [ExplainRequest("vebi", 0), ExplainRequest("vebi")])
        np.testing.assert_allclose(result.explanations[0].heatmap, again.explanations[0].heatmap, atol=1e-6)
    finally:
        user_hook.remove()
        model.blocks[0][0].weight.requires_grad_(True)


def test_a_missing_relevance_file_fails_the_load_not_a_request(tmp_path):
    from whyserve.errors import ModelLoadError
    from whyserve.serving import ExplainService, ServingConfig

    with pytest.raises(ModelLoadError, match=r"vebi_relevance .*gone.vebi.json: no such file"):
        ExplainService(ServingConfig(model="flowers_cnn", vebi_relevance=str(tmp_path / "gone.vebi.json")))
