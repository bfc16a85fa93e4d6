"""Contrastive explanations: the backward signal is -d log p_Q / dA (Prabhushankar et al.)."""

import numpy as np
import pytest
import torch
from torch import nn

from whyserve import Explainer, ExplainRequest, InvalidOption, ModelSpec


def _reference_layer_map(model, layer, x, objectives):
    """Full-graph autograd, independent of the engine: minmax(ReLU(sum mean(dJ/dA) * A))."""
    captured = {}
    handle = layer.register_forward_hook(lambda m, i, o: captured.setdefault("a", o))
    try:
        out = model(x)
    finally:
        handle.remove()
    a = captured["a"]
    (grads,) = torch.autograd.grad(sum(j(out[i]) for i, j in enumerate(objectives)), a)
    cam = torch.relu((grads.mean((2, 3))[:, :, None, None] * a).sum(1)).detach()
    cam = cam - cam.flatten(1).min(1).values[:, None, None]
    return (cam / (cam.flatten(1).max(1).values[:, None, None] + 1e-7)).numpy()


def test_backward_signal_is_minus_grad_log_p_contrast(effnet, effnet_explainer, effnet_batch):
    requests = [ExplainRequest("contrastive", contrast="Egyptian cat"), ExplainRequest("contrastive", contrast=504)]
    result = effnet_explainer.explain(effnet_batch, requests)
    assert [e.contrast for e in result.explanations] == [285, 504]
    reference = _reference_layer_map(
        effnet.module,
        effnet.module.head_act,
        effnet_batch,
        [lambda o: -torch.log_softmax(o, 0)[285], lambda o: -torch.log_softmax(o, 0)[504]],
    )
    ours = np.stack([e.layer_heatmap for e in result.explanations])
    assert np.abs(ours - reference).max() <= 1e-4


def test_contrast_omitted_means_why_not_p_with_full_confidence(effnet_explainer, effnet_batch):
    result = effnet_explainer.explain(effnet_batch[:1], [ExplainRequest("contrastive")])
    plain = effnet_explainer.explain(effnet_batch[:1], [ExplainRequest("gradcam")])
    contrastive, gradcam = result.explanations[0], plain.explanations[0]
    assert contrastive.contrast == contrastive.target == gradcam.target
    # A different question gets a different answer: the maps are far from equal.
    assert np.abs(contrastive.heatmap - gradcam.heatmap).mean() > 0.05
    assert np.corrcoef(contrastive.heatmap.ravel(), gradcam.heatmap.ravel())[0, 1] < 0.9


def test_targets_and_contrasts_by_label_and_index_agree(effnet_explainer, effnet_batch):
    by_label = effnet_explainer.explain(effnet_batch[:1], [ExplainRequest("contrastive", "tiger cat", "Egyptian cat")])
    by_index = effnet_explainer.explain(effnet_batch[:1], [ExplainRequest("contrastive", 282, "285")])
    np.testing.assert_array_equal(by_label.explanations[0].heatmap, by_index.explanations[0].heatmap)


@pytest.mark.parametrize(
    "request_, option",
    [
        (ExplainRequest("contrastive", contrast="not a class"), "contrast"),
        (ExplainRequest("contrastive", contrast=1000), "contrast"),
        (ExplainRequest("gradcam", target=-1), "target"),
        (ExplainRequest("gradcam", contrast=3), "contrast"),
        (ExplainRequest("bcos"), "method"),  # a B-cos-only method
    ],
)
def test_bad_options_name_what_is_wrong(effnet_explainer, effnet_batch, request_, option):
    with pytest.raises(InvalidOption) as error:
        effnet_explainer.explain(effnet_batch[:1], [request_])
    assert error.value.option == option and error.value.valid


class _Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1))
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(torch.relu(self.features(x)).mean((2, 3)))


def test_regression_contrast_uses_mse_to_the_contrast_value():
    model = _Regressor().eval()
    spec = ModelSpec(
        name="regressor", module=model, view=lambda im: im, normalize=lambda im: im, input_size=(32, 32), task="regression"
    )
    explainer = Explainer(spec)
    assert explainer.layer_name == "features"
    x = torch.randn(2, 3, 32, 32)
    result = explainer.explain(x, [ExplainRequest("contrastive", contrast=0.75), ExplainRequest("contrastive", contrast=-2)])
    reference = _reference_layer_map(model, model.features, x, [lambda o: (o[0] - 0.75) ** 2, lambda o: (o[0] + 2.0) ** 2])
    assert np.abs(np.stack([e.layer_heatmap for e in result.explanations]) - reference).max() <= 1e-4
    assert result.explanations[0].contrast == 0.75
    with pytest.raises(InvalidOption, match="contrast value"):
        explainer.explain(x[:1], [ExplainRequest("contrastive")])
    with pytest.raises(InvalidOption, match="not a number"):
        explainer.explain(x[:1], [ExplainRequest("contrastive", contrast="high")])
