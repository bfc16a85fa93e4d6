"""``whyserve eval``'s passes (``whyserve.eval.passes``): the shared masked forwards and ONNX
Runtime give the Score-CAM maps of the per-target PyTorch path, and score each mask once."""

import numpy as np
import pytest
import torch

from whyserve import Explainer, ExplainRequest
from whyserve.data.flowers import make_grid
from whyserve.eval.passes import eval_backend
from whyserve.eval.report import _to_tensor
from whyserve.models import load_model

pytestmark = pytest.mark.slow  # 8 model explanations of a grid, two models


@pytest.fixture(scope="module")
def grid():
    """One mixed grid, four times (one row per cell), at 96 x 96 to keep the test short."""
    g = make_grid(100, 0)
    image = torch.nn.functional.interpolate(_to_tensor(g.image)[None], size=(96, 96), mode="bilinear")
    return image.expand(4, -1, -1, -1).contiguous(), list(g.labels)


def _heatmaps(explainer: Explainer, images: torch.Tensor, targets: list[int], weighting: str) -> list[np.ndarray]:
    requests = [ExplainRequest("scorecam", t, weighting=weighting) for t in targets]
    return [e.heatmap for e in explainer.explain(images, requests).explanations]


@pytest.mark.parametrize("name", ["flowers_cnn", "flowers_bcos"])
@pytest.mark.parametrize("onnx", [True, False])
@pytest.mark.parametrize("weighting", ["probability", "channel_softmax"])
def test_shared_masks_give_the_per_target_maps_with_one_set_of_forwards(grid, name, onnx, weighting):
    images, targets = grid
    spec = load_model(name)
    reference = _heatmaps(Explainer(spec, scorecam_chunk=64), images, targets, weighting)  # each cell on its own
    backend = eval_backend(spec, onnx=onnx)
    with backend.shared_masks():
        shared = _heatmaps(Explainer(spec, scorecam_chunk=64, backend=backend), images, targets, weighting)
    for a, b in zip(reference, shared):
        np.testing.assert_allclose(b, a, atol=1e-5)
    # Every masked image of cells 2-4 is one of cell 1's (64 channels; constant ones give one mask).
    assert backend.hits >= 3 * 60
    assert len({a.tobytes() for a in reference}) == 4  # four targets, four different maps


def test_outside_shared_masks_nothing_is_kept(grid):
    images, targets = grid
    spec = load_model("flowers_cnn")
    backend = eval_backend(spec)
    Explainer(spec, backend=backend).explain(images[:2], [ExplainRequest("scorecam", t) for t in targets[:2]])
    assert backend.hits == 0 and backend.cache is None


def test_predict_on_onnx_runtime_equals_pytorch(grid):
    images, _ = grid
    spec = load_model("flowers_bcos")
    with torch.no_grad():
        expected = spec.module.eval()(images)
    np.testing.assert_allclose(eval_backend(spec).predict(images).numpy(), expected.numpy(), atol=1e-4)
