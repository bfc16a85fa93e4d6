"""B-cos contribution maps through the engine: the maps sum to the logits they explain."""

import numpy as np
import pytest
import torch

from whyserve import Explainer, ExplainRequest, InvalidOption, load_model
from whyserve.data.flowers import as_arrays, generate, one_part_contrasts


@pytest.fixture(scope="module")
def bcos():
    return load_model("flowers_bcos")


@pytest.fixture(scope="module")
def batch():
    images, labels = as_arrays(generate(6, seed=31))
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, labels.tolist()


def _close(total, expected):
    return abs(total - expected) <= 1e-4 * max(abs(expected), 1e-3)


def test_contribution_map_sums_to_the_logit(bcos, batch):
    x, labels = batch
    explainer = Explainer(bcos)
    targets = [labels[0], (labels[1] + 3) % 8, None, 0, 7, labels[5]]  # true, other, top-1, ...
    result = explainer.explain(x, [ExplainRequest("bcos", target=t) for t in targets])
    logits = result.logits.double()
    for i, e in enumerate(result.explanations):
        assert e.method == "bcos" and e.contrast is None and e.layer == "add_inverse"
        assert e.artifacts["contributions"].shape == (96, 96)
        total = float(e.artifacts["contributions"].astype(np.float64).sum())
        assert _close(total, float(logits[i, e.target])), (total, float(logits[i, e.target]))
    assert result.explanations[2].target == int(logits[2].argmax())


def test_contrastive_contribution_map_sums_to_the_logit_difference(bcos, batch):
    x, labels = batch
    requests = [ExplainRequest("bcos", target=y, contrast=one_part_contrasts(y)[i % 3]) for i, y in enumerate(labels)]
    result = Explainer(bcos).explain(x, requests)
    for i, (e, r) in enumerate(zip(result.explanations, requests)):
        assert e.contrast == r.contrast
        difference = float(result.logits[i, e.target] - result.logits[i, e.contrast])
        assert _close(float(e.artifacts["contributions"].astype(np.float64).sum()), difference)


def test_heatmap_is_the_positive_part_normalised_by_its_maximum(bcos, batch):
    x, labels = batch
    e = Explainer(bcos).explain(x[:1], [ExplainRequest("bcos", target=labels[0])]).explanations[0]
    assert e.heatmap.dtype == np.float32 and e.heatmap.shape == (96, 96)
    positive = np.clip(e.artifacts["contributions"], 0, None)
    assert np.allclose(e.heatmap, positive / positive.max(), atol=1e-6)
    assert e.heatmap.max() == pytest.approx(1.0)
    assert (
        e.artifacts["bcos_color"].shape == (96, 96, 4)
        and e.artifacts["bcos_color"].min() >= 0
        and e.artifacts["bcos_color"].max() <= 1
    )


def test_contributions_equal_input_times_dynamic_weights_by_hand(bcos, batch):
    # W(x) from autograd in the bcos package's own explanation mode, independently of the engine
    x, labels = batch
    model = bcos.module
    encoded = torch.cat([x[:1], 1 - x[:1]], 1).requires_grad_(True)
    handle = model.add_inverse.register_forward_hook(lambda m, i, o: encoded)
    with model.explanation_mode():
        out = model(x[:1])
        out[0, labels[0]].backward()
    handle.remove()
    expected = (encoded * encoded.grad).sum(1)[0].detach().numpy()
    e = Explainer(bcos).explain(x[:1], [ExplainRequest("bcos", target=labels[0])]).explanations[0]
    assert np.allclose(e.artifacts["contributions"], expected, atol=1e-6)
    assert not any(m.detach for m in model.modules() if hasattr(m, "set_explanation_mode"))  # mode restored


def test_mixed_batch_and_inference_mode(bcos, batch):
    x, _labels = batch
    requests = [
        ExplainRequest("bcos"),
        ExplainRequest("gradcam"),
        None,
        ExplainRequest("contrastive", contrast=0),
        ExplainRequest("scorecam"),
        ExplainRequest("bcos", contrast=1),
    ]
    with torch.inference_mode():
        result = Explainer(bcos).explain(x, requests)
    assert result.explanations[2] is None
    assert [e.method for e in result.explanations if e] == ["bcos", "gradcam", "contrastive", "scorecam", "bcos"]
    assert all(e.heatmap.shape == (96, 96) for e in result.explanations if e)
    assert "contributions" not in result.explanations[1].artifacts


def test_bcos_on_a_model_without_it_names_the_models_methods():
    cnn = load_model("flowers_cnn")
    with pytest.raises(InvalidOption) as error:
        Explainer(cnn).explain(torch.zeros(1, 3, 96, 96), [ExplainRequest("bcos")])
    assert error.value.option == "method"
    assert error.value.valid == ["gradcam", "contrastive", "scorecam", "fgvis", "vebi"]


def test_contrast_is_refused_for_methods_without_one(bcos):
    with pytest.raises(InvalidOption) as error:
        Explainer(bcos).resolve(ExplainRequest("gradcam", contrast=1))
    assert error.value.option == "contrast" and "method=bcos" in error.value.valid
    with pytest.raises(InvalidOption):
        Explainer(bcos).resolve(ExplainRequest("bcos", contrast="no such class"))
