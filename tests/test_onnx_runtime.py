"""ONNX export and Score-CAM on ONNX Runtime: the same numbers as the PyTorch path."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from whyserve import Explainer, ExplainRequest, InvalidOption
from whyserve.backends.onnx.backend import OrtBackend
from whyserve.backends.onnx.runtime import InvalidOnnxModel, create_session, export_onnx, session_metadata


@pytest.fixture(scope="module")
def effnet_onnx(effnet, tmp_path_factory):
    return export_onnx(effnet, tmp_path_factory.mktemp("onnx") / "efficientnet_lite0.onnx")


@pytest.fixture(scope="module")
def effnet_ort(effnet, effnet_onnx):
    return Explainer(effnet, backend=OrtBackend(create_session(effnet_onnx, threads=2), effnet))


def test_export_is_valid_onnx_with_logits_and_activations(effnet_onnx):
    model = onnx.load(str(effnet_onnx))
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["logits", "activations"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch


def test_onnx_outputs_equal_pytorch_on_real_photos(effnet, effnet_ort, effnet_batch):
    torch_result = Explainer(effnet).explain(effnet_batch, [None, None])
    logits, activations = effnet_ort.backend.forward(effnet_batch, graph=False)
    torch.testing.assert_close(logits, torch_result.logits, atol=1e-4, rtol=0)
    with torch.no_grad():
        expected = Explainer(effnet).backend.forward(effnet_batch, graph=False)[1]
    torch.testing.assert_close(activations, expected, atol=1e-4, rtol=0)
    assert effnet_ort.layer_name == "head_act"
    assert session_metadata(effnet_ort.backend.session)["whyserve.model"] == "efficientnet_lite0"


@pytest.mark.parametrize("weighting", ["probability", "channel_softmax"])
def test_ort_scorecam_maps_equal_pytorch(effnet, effnet_ort, effnet_batch, weighting):
    requests = [
        ExplainRequest("scorecam", weighting=weighting, channels=32),
        ExplainRequest("scorecam", 504, weighting=weighting, channels=48),
    ]
    ours = effnet_ort.explain(effnet_batch, requests)
    reference = Explainer(effnet).explain(effnet_batch, requests)
    assert ours.backend == "onnxruntime:CPUExecutionProvider" and reference.backend == "torch:cpu"
    for a, b in zip(ours.explanations, reference.explanations):
        assert a.target == b.target
        assert np.abs(a.heatmap - b.heatmap).max() <= 1e-4
        assert a.heatmap.std() > 0.05


def test_ort_exact_scorecam_equals_pytorch(resnet, photos, tmp_path):
    x = F.interpolate(resnet.preprocess(photos["chelsea"])[None], size=(64, 64), mode="bilinear")
    session = create_session(export_onnx(resnet, tmp_path / "resnet18.onnx"))
    request = [ExplainRequest("scorecam", 285, weighting="channel_softmax")]
    ours = Explainer(resnet, scorecam_chunk=64, backend=OrtBackend(session)).explain(x, request).explanations[0]
    reference = Explainer(resnet).explain(x, request).explanations[0]
    assert np.abs(ours.heatmap - reference.heatmap).max() <= 1e-4


@pytest.mark.parametrize("weighting", ["probability", "channel_softmax"])
def test_fast_mode_with_all_channels_is_exact(resnet, photos, weighting):
    x = F.interpolate(resnet.preprocess(photos["coffee"])[None], size=(64, 64), mode="bilinear")
    explainer = Explainer(resnet, scorecam_chunk=64)
    exact = explainer.explain(x, [ExplainRequest("scorecam", weighting=weighting)]).explanations[0]
    all_n = explainer.explain(x, [ExplainRequest("scorecam", weighting=weighting, channels=512)]).explanations[0]
    fewer = explainer.explain(x, [ExplainRequest("scorecam", weighting=weighting, channels=16)]).explanations[0]
    np.testing.assert_array_equal(exact.heatmap, all_n.heatmap)
    assert np.abs(exact.heatmap - fewer.heatmap).max() > 1e-3  # fewer channels is an approximation


def test_ort_explainer_without_a_head_serves_only_gradient_free_methods(effnet, effnet_onnx, effnet_batch):
    headless = Explainer(effnet, backend=OrtBackend(create_session(effnet_onnx, threads=2)))
    with pytest.raises(InvalidOption) as error:
        headless.explain(effnet_batch[:1], [ExplainRequest("gradcam")])
    assert error.value.valid == ["scorecam"]
    with pytest.raises(InvalidOption, match="channels"):
        headless.explain(effnet_batch[:1], [ExplainRequest("scorecam", channels=0)])


def test_session_threads_do_not_busy_wait_unless_asked(effnet_onnx):
    """ONNX Runtime's intra-op threads spin after a run by default; whyserve's sessions turn
    that off (they share the cores with the PyTorch head and other workers), on request on."""
    key = "session.intra_op.allow_spinning"
    assert create_session(effnet_onnx, threads=2).get_session_options().get_session_config_entry(key) == "0"
    assert create_session(effnet_onnx, threads=2, spinning=True).get_session_options().get_session_config_entry(key) == "1"


def test_onnx_with_wrong_outputs_is_refused_at_load(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(nn.Conv2d(3, 4, 3), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, input_names=["input"])
    with pytest.raises(InvalidOnnxModel, match=r"expected input 'input' .* outputs 'logits'.*whyserve export-onnx"):
        create_session(path)


def test_export_onnx_command(tmp_path):
    from whyserve.cli import main

    assert main(["export-onnx", "resnet18", "--out", str(tmp_path / "r.onnx")]) == 0
    assert [o.name for o in create_session(tmp_path / "r.onnx").get_outputs()] == ["logits", "activations"]
