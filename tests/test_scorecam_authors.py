"""Score-CAM with ``weighting=probability`` gives the paper authors' map, not only their weights.

The reference is a port of the loop in haofanwang/Score-CAM, cam/scorecam.py (ScoreCAM.forward),
kept line for line: each channel's upsampled activation (bilinear, align_corners=False) is skipped
when constant, min-max normalised into a mask, scored by the softmax of the masked input at the
class, and the score times the *unnormalised* upsampled activation is summed; then ReLU and one
min-max at input size. Real weights and real photos, at the head (ResNet-18 layer4, 512 channels)
and at a mid layer (EfficientNet-Lite0 block 4, 40 channels), at non-square input sizes, on the
PyTorch and ONNX Runtime paths. (EfficientNet-Lite0's 1280-channel head works too, but its
reference loop takes minutes on CI's 2 cores.)
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from whyserve import Explainer, ExplainRequest
from whyserve.backends.onnx.backend import OrtBackend
from whyserve.backends.onnx.runtime import create_session, export_onnx

# (model fixture, layer, (H, W)): non-square, and not the models' 224 x 224
CASES = {"head": ("resnet", "layer4", (48, 64)), "mid": ("effnet", "net._blocks.4", (96, 128))}


def authors_scorecam(model, layer, x, class_idx):
    """haofanwang/Score-CAM ScoreCAM.forward for one image x (1, C, H, W), CPU, no CUDA moves."""
    _b, _c, h, w = x.size()
    captured = {}
    handle = layer.register_forward_hook(lambda m, i, o: captured.__setitem__("value", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    activations = captured["value"]
    _b, k, _u, _v = activations.size()
    score_saliency_map = torch.zeros((1, 1, h, w))
    predicted_class = torch.LongTensor([class_idx])
    with torch.no_grad():
        for i in range(k):
            saliency_map = torch.unsqueeze(activations[:, i, :, :], 1)
            saliency_map = F.interpolate(saliency_map, size=(h, w), mode="bilinear", align_corners=False)
            if saliency_map.max() == saliency_map.min():
                continue
            norm_saliency_map = (saliency_map - saliency_map.min()) / (saliency_map.max() - saliency_map.min())
            output = model(x * norm_saliency_map)
            output = F.softmax(output, dim=1)
            score = output[0][predicted_class]
            score_saliency_map += score * saliency_map
    score_saliency_map = F.relu(score_saliency_map)
    low, high = score_saliency_map.min(), score_saliency_map.max()
    assert low != high, "the authors' code returns None here"
    return ((score_saliency_map - low) / (high - low))[0, 0].numpy()


@pytest.fixture(scope="module", params=list(CASES))
def case(request, photos):
    fixture, layer, size = CASES[request.param]
    spec = request.getfixturevalue(fixture)
    image = F.interpolate(spec.preprocess(photos["chelsea"])[None], size=size, mode="bilinear", align_corners=False)
    target = int(spec.module.eval()(image).argmax())
    reference = authors_scorecam(spec.module, dict(spec.module.named_modules())[layer], image, target)
    assert reference.std() > 0.05  # a real map, not a flat one
    return spec, layer, image, target, reference


def test_pytorch_path_gives_the_authors_map(case):
    spec, layer, image, target, reference = case
    result = Explainer(spec, layer=layer, scorecam_chunk=64).explain(image, [ExplainRequest("scorecam", target)])
    heatmap = result.explanations[0].heatmap
    assert heatmap.shape == reference.shape == image.shape[-2:]
    assert np.abs(heatmap - reference).max() <= 1e-4


def test_onnx_runtime_path_gives_the_authors_map(case, tmp_path):
    spec, layer, image, target, reference = case
    session = create_session(export_onnx(spec, tmp_path / "model.onnx", layer=layer), threads=2)
    result = Explainer(spec, backend=OrtBackend(session), scorecam_chunk=64).explain(image, [ExplainRequest("scorecam", target)])
    assert result.backend.startswith("onnxruntime")
    assert np.abs(result.explanations[0].heatmap - reference).max() <= 1e-4
