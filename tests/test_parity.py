"""The engine's maps equal the peers' maps on the same model, layer and targets."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from pytorch_grad_cam import GradCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from whyserve import Explainer, ExplainRequest

TOL = 1e-4


def _peer(cls, spec, layer, x, targets):
    module = dict(spec.module.named_modules())[layer]
    cam = cls(model=spec.module, target_layers=[module])
    try:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    finally:
        cam.activations_and_grads.release()


def _ours(spec, layer, x, requests):
    result = Explainer(spec, layer=layer).explain(x, requests)
    return np.stack([e.heatmap for e in result.explanations])


@pytest.fixture(scope="module")
def resnet_batch(resnet, photos):
    return torch.stack([resnet.preprocess(photos[n]) for n in ("chelsea", "coffee", "grace_hopper")])


def test_gradcam_equals_pytorch_grad_cam_on_efficientnet(effnet, effnet_batch):
    targets = [285, 504]  # Egyptian cat, coffee mug: neither is the top-1
    ours = _ours(effnet, "head_act", effnet_batch, [ExplainRequest("gradcam", t) for t in targets])
    peer = _peer(GradCAM, effnet, "head_act", effnet_batch, targets)
    assert ours.shape == peer.shape == (2, 224, 224)
    assert np.abs(ours - peer).max() <= TOL
    assert ours.std() > 0.1  # not a degenerate (flat) map


def test_gradcam_equals_pytorch_grad_cam_on_resnet18(resnet, resnet_batch):
    targets = [3, 500, 999]
    ours = _ours(resnet, "layer4", resnet_batch, [ExplainRequest("gradcam", t) for t in targets])
    peer = _peer(GradCAM, resnet, "layer4", resnet_batch, targets)
    assert np.abs(ours - peer).max() <= TOL
    assert ours.std() > 0.1


# Score-CAM costs one forward per channel: at 128 px the peer needs ~1 s per 100 channels.
@pytest.mark.slow
@pytest.mark.parametrize("model, layer", [("effnet", "net._blocks.15"), ("resnet", "layer4")])
def test_scorecam_channel_softmax_equals_pytorch_grad_cam(model, layer, request, photos):
    spec = request.getfixturevalue(model)
    x = torch.stack([spec.preprocess(photos[n]) for n in ("chelsea", "coffee")])
    x = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    targets = [285, 967]
    ours = _ours(spec, layer, x, [ExplainRequest("scorecam", t, weighting="channel_softmax") for t in targets])
    peer = _peer(ScoreCAM, spec, layer, x, targets)
    assert np.abs(ours - peer).max() <= TOL
    assert ours.std() > 0.05


@pytest.mark.parametrize("model, layer", [("effnet", "head_act"), ("resnet", "layer4")])
def test_gradcam_agrees_with_captum_layer_gradcam(model, layer, request, photos):
    spec = request.getfixturevalue(model)
    x = torch.stack([spec.preprocess(photos[n]) for n in ("chelsea", "coffee")])
    targets = [282, 968]
    result = Explainer(spec, layer=layer).explain(x, [ExplainRequest("gradcam", t) for t in targets])
    attr = LayerGradCam(spec.module, dict(spec.module.named_modules())[layer]).attribute(
        x, target=targets, relu_attributions=True
    )
    attr = _minmax(attr.detach())
    upsampled = _minmax(LayerAttribution.interpolate(attr, (224, 224), "bilinear"))[:, 0].numpy()
    ours_layer = np.stack([e.layer_heatmap for e in result.explanations])
    ours = np.stack([e.heatmap for e in result.explanations])
    assert np.abs(ours_layer - attr[:, 0].numpy()).max() <= TOL
    assert np.abs(ours - upsampled).max() <= TOL


def _minmax(maps):
    low = maps.amin(dim=(2, 3), keepdim=True)
    return (maps - low) / ((maps - low).amax(dim=(2, 3), keepdim=True) + 1e-7)
