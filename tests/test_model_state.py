"""The engine leaves the model as it found it, builds no graph below the target layer,
and does not leak memory."""

import gc

import numpy as np
import psutil
import pytest
import torch

from whyserve import Explainer, ExplainRequest

ALL_METHODS = ["gradcam", "contrastive", "scorecam"]


def _state(model):
    return {
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "grad_mode": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
    }


def _small(x):
    return torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear")  # keeps Score-CAM cheap


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference_mode"])
def test_model_is_left_as_found(resnet, resnet_small_batch, method, mode):
    model = resnet.module
    model.train()  # a caller that left the model training
    model.layer1[0].conv1.weight.requires_grad_(False)
    user_hook = model.layer2.register_forward_hook(lambda *args: None)
    context = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[mode]
    try:
        with context():
            before = _state(model)
            result = Explainer(resnet).explain(resnet_small_batch, [ExplainRequest(method, 7), ExplainRequest(method)])
            after = _state(model)
        assert after == before
        assert all(e is not None and e.heatmap.shape == (64, 64) for e in result.explanations)
        # Explained in eval mode, although the model was left training: the same map as in eval.
        model.eval()
        eval_result = Explainer(resnet).explain(resnet_small_batch, [ExplainRequest(method, 7), ExplainRequest(method)])
        np.testing.assert_allclose(result.explanations[0].heatmap, eval_result.explanations[0].heatmap, atol=1e-5)
    finally:
        user_hook.remove()
        model.layer1[0].conv1.weight.requires_grad_(True)
        model.eval()


@pytest.fixture(scope="module")
def resnet_small_batch(resnet, photos):
    return _small(torch.stack([resnet.preprocess(photos["chelsea"]), resnet.preprocess(photos["coffee"])]))


def test_autograd_records_only_from_the_target_layer_up(effnet, effnet_batch):
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.grad_fn is not None

        return hook

    model = effnet.module
    handles = [
        model.net._blocks[15].register_forward_hook(record("below")),
        model.net._fc.register_forward_hook(record("above")),
    ]
    try:
        Explainer(effnet).explain(effnet_batch[:1], [ExplainRequest("gradcam")])
    finally:
        for h in handles:
            h.remove()
    assert seen == {"below": False, "above": True}


def test_prediction_comes_from_the_explaining_forward(effnet, effnet_explainer, effnet_batch):
    result = effnet_explainer.explain(effnet_batch, [ExplainRequest("gradcam"), None])
    plain = effnet_explainer.predict(effnet_batch)
    torch.testing.assert_close(result.logits, plain, atol=1e-4, rtol=1e-4)
    assert result.explanations[1] is None and result.explanations[0].target == int(plain[0].argmax())


def test_200_explanations_do_not_grow_memory(effnet_explainer, effnet_batch):
    process = psutil.Process()
    requests = [[ExplainRequest("gradcam")], [ExplainRequest("contrastive", contrast=285)]]
    for i in range(20):  # warm-up: allocator pools and lazy initialisation
        effnet_explainer.explain(effnet_batch[:1], requests[i % 2])
    gc.collect()
    start = process.memory_info().rss
    for i in range(200):
        effnet_explainer.explain(effnet_batch[:1], requests[i % 2])
    gc.collect()
    grown_mb = (process.memory_info().rss - start) / 2**20
    assert grown_mb < 30, f"memory grew by {grown_mb:.1f} MiB over 200 explanations"
