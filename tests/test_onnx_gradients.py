"""Gradient methods on ONNX Runtime: the trunk on ONNX Runtime, the head above the target
layer (found with torch.fx, whyserve.backends.onnx.split) in PyTorch; maps equal the PyTorch path's."""

import numpy as np
import pytest
import torch

from whyserve import Explainer, ExplainRequest, InvalidOption
from whyserve.backends.onnx.backend import OrtBackend
from whyserve.backends.onnx.runtime import create_session, export_onnx
from whyserve.backends.onnx.split import HeadSplitError, split_head

REQUESTS = [ExplainRequest("gradcam"), ExplainRequest("contrastive", contrast="balloon"), ExplainRequest("contrastive")]


@pytest.fixture(scope="module")
def onnx_files(effnet, resnet, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx_split")
    return {spec.name: export_onnx(spec, folder / f"{spec.name}.onnx") for spec in (effnet, resnet)}


def ort_explainer(spec, path):
    return Explainer(spec, backend=OrtBackend(create_session(path, threads=2), spec))


@pytest.mark.parametrize("model", ["effnet", "resnet"])
def test_onnx_trunk_gradient_maps_equal_pytorch(model, request, photos, onnx_files):
    spec = request.getfixturevalue(model)
    images = torch.stack([spec.preprocess(photos[name]) for name in ("chelsea", "coffee", "grace_hopper")])
    ort = ort_explainer(spec, onnx_files[spec.name])
    assert {"gradcam", "contrastive", "scorecam"} <= set(ort.methods)
    served = ort.explain(images, REQUESTS)
    expected = Explainer(spec).explain(images, REQUESTS)
    assert served.backend.startswith("onnxruntime:")
    for got, want in zip(served.explanations, expected.explanations):
        assert (got.method, got.target, got.contrast, got.layer) == (want.method, want.target, want.contrast, want.layer)
        np.testing.assert_allclose(got.layer_heatmap, want.layer_heatmap, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got.heatmap, want.heatmap, atol=1e-4, rtol=0)
    assert served.explanations[0].heatmap.max() > 0.99  # a real map, not an all-zero one on both sides


def test_head_is_the_models_tail(resnet):
    head = split_head(resnet.module, "layer4")
    activations = torch.randn(2, 512, 7, 7)
    with torch.no_grad():
        expected = resnet.module.fc(torch.flatten(resnet.module.avgpool(activations), 1))
        torch.testing.assert_close(head(activations), expected)
    assert head.fc is resnet.module.fc  # shares the model's weights, copies nothing


def test_head_that_reads_below_the_layer_is_refused(resnet, tmp_path):
    with pytest.raises(HeadSplitError, match=r"cannot split ResNet at 'layer4.1.conv2'.*also read 'layer4_0'.*skips"):
        split_head(resnet.module, "layer4.1.conv2")
    path = export_onnx(resnet, tmp_path / "inner.onnx", layer="layer4.1.conv2")
    backend = OrtBackend(create_session(path, threads=2), resnet)
    assert "skips" in backend.head_error
    ort = Explainer(resnet, backend=backend)
    assert set(ort.methods) == {"scorecam"}  # Score-CAM needs no head: still served
    with pytest.raises(InvalidOption) as error:
        ort.resolve(ExplainRequest("gradcam"))
    assert error.value.valid == ["scorecam"]


def test_onnx_from_other_weights_is_refused_for_gradients(effnet, onnx_files):
    from whyserve.models import load_model

    other = load_model("resnet18")
    with torch.no_grad():
        other.module.fc.weight.mul_(2.0)  # the .onnx has the seeded weights, this head not
    backend = OrtBackend(create_session(onnx_files["resnet18"], threads=2), other)
    assert backend.head is None and "other weights" in backend.head_error


@pytest.mark.parametrize("weighting", ["probability", "channel_softmax"])
def test_target_ranking_is_the_weightings_score_contribution_times_spread(effnet, photos, weighting):
    """For a pooled linear head, sum over space of dJ/dA_k * A_k is (W[target, k] - sum_c p_c
    W[c, k]) * mean(A_k) for J = log p_target (weighting probability) and W[target, k] *
    mean(A_k) for J = the target logit (channel_softmax); the priority is that, where positive,
    times std(A_k), and the other channels rank last by std(A_k)."""
    from whyserve.methods.scorecam import target_priority

    explainer = Explainer(effnet)
    x = effnet.preprocess(photos["chelsea"])
    with explainer.backend.running():
        logits, activations = explainer.backend.forward(x[None], graph=False)
        priority = target_priority(explainer.backend, x, 417, weighting)
        assert not torch.is_grad_enabled()  # the graph pass leaves grad mode as found
    weight = effnet.module.net._fc.weight.detach()
    mean, spread = activations[0].mean(dim=(1, 2)), activations[0].flatten(1).std(1)
    competitors = torch.softmax(logits[0], dim=0) @ weight if weighting == "probability" else 0.0
    contribution = (weight[417] - competitors) * mean
    assert 0 < int((contribution > 0).sum()) < len(contribution)  # both branches are exercised
    expected = torch.where(contribution > 0, contribution * spread, spread - spread.max() - 1)
    torch.testing.assert_close(priority, expected, atol=1e-6, rtol=1e-4)
    raw_logit_ranking = (weight[417] * mean).topk(64).indices  # the ranking before the spread factor
    assert set(priority.topk(64).indices.tolist()) != set(raw_logit_ranking.tolist())


def test_fast_scorecam_rankings_are_named_options(effnet_explainer, effnet_batch):
    x = effnet_batch[:1]
    maps = {
        ranking: effnet_explainer.explain(x, [ExplainRequest("scorecam", 417, channels=8, ranking=ranking)]).explanations[0]
        for ranking in ("target", "spread")
    }
    assert np.abs(maps["target"].heatmap - maps["spread"].heatmap).max() > 1e-2  # other channels picked
    with pytest.raises(InvalidOption, match="ranking") as error:
        effnet_explainer.resolve(ExplainRequest("scorecam", ranking="random"))
    assert error.value.valid == ["target", "spread"]
