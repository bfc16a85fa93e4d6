"""Score-CAM's `probability` weighting equals the paper authors' algorithm, one mask at a time."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from whyserve import Explainer, ExplainRequest


@pytest.fixture(scope="module")
def batch(resnet, photos):
    x = torch.stack([resnet.preprocess(photos[n]) for n in ("chelsea", "coffee")])
    return F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)


def _authors_scorecam(model, layer, x, target):
    """The loop of haofanwang/Score-CAM (one image), with this project's final scaling."""
    captured = {}
    handle = layer.register_forward_hook(lambda m, i, o: captured.__setitem__("a", o))
    with torch.no_grad():
        model(x[None])
    handle.remove()
    acts = captured["a"][0]
    cam = torch.zeros(acts.shape[1:])
    with torch.no_grad():
        for k in range(acts.shape[0]):
            sal = F.interpolate(acts[k][None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
            if sal.max() == sal.min():
                continue
            norm = (sal - sal.min()) / (sal.max() - sal.min())
            score = F.softmax(model(x[None] * norm), dim=1)[0, target]
            cam += score * acts[k]
    cam = torch.relu(cam)
    cam = cam - cam.min()
    return (cam / (cam.max() + 1e-7)).numpy()


def test_probability_weighting_equals_the_authors_algorithm(resnet, batch):
    targets = [285, 967]
    explainer = Explainer(resnet, scorecam_chunk=16)
    result = explainer.explain(batch, [ExplainRequest("scorecam", t, weighting="probability") for t in targets])
    layer = dict(resnet.module.named_modules())[explainer.layer_name]
    for i, target in enumerate(targets):
        reference = _authors_scorecam(resnet.module, layer, batch[i], target)
        assert np.abs(result.explanations[i].layer_heatmap - reference).max() <= 1e-4
        assert reference.std() > 0.05


@pytest.mark.parametrize("weighting", ["probability", "channel_softmax"])
def test_chunk_size_does_not_change_the_map(resnet, batch, weighting):
    requests = [ExplainRequest("scorecam", 3, weighting=weighting), ExplainRequest("scorecam", weighting=weighting)]
    one = Explainer(resnet, scorecam_chunk=7).explain(batch, requests)
    many = Explainer(resnet, scorecam_chunk=200).explain(batch, requests)
    for a, b in zip(one.explanations, many.explanations):
        assert np.abs(a.heatmap - b.heatmap).max() <= 1e-4


def test_the_two_weightings_are_different_answers(resnet, batch):
    maps = [
        Explainer(resnet).explain(batch[:1], [ExplainRequest("scorecam", 285, weighting=w)]).explanations[0].heatmap
        for w in ("probability", "channel_softmax")
    ]
    assert np.abs(maps[0] - maps[1]).max() > 1e-3
