"""Score-CAM on ONNX Runtime: export a model with its target-layer activations as a second
output, and open an ``onnxruntime.InferenceSession`` on it (run by
``whyserve.backends.onnx.backend.OrtBackend``: only the forward passes run on ONNX Runtime,
the masks, weights and maps are the engine's own code, so the maps equal the PyTorch path's).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from torch import nn

from whyserve.layers import eval_mode, find_target_layer, get_layer
from whyserve.models import ModelSpec
from whyserve.models.onnx_source import ACTIVATIONS, INPUT, LOGITS, META_LAYER, META_MODEL

OUTPUTS = (LOGITS, ACTIVATIONS)


class InvalidOnnxModel(ValueError):
    """The .onnx file is not one whyserve can explain with (wrong inputs or outputs)."""


class _WithActivations(nn.Module):
    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        handle = self.layer.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        return logits, captured[0]


def export_onnx(spec: ModelSpec, path: str | Path, layer: str | None = None, opset: int = 17) -> Path:
    """Write ``spec``'s model as ONNX with outputs (logits, activations); batch and image
    size are dynamic."""
    path = Path(path)
    layer_name = layer or spec.target_layer or find_target_layer(spec.module, spec.input_size)
    wrapper = _WithActivations(spec.module, get_layer(spec.module, layer_name))
    example = torch.zeros(2, 3, *spec.input_size)
    dynamic = {
        INPUT: {0: "batch", 2: "height", 3: "width"},
        "logits": {0: "batch"},
        "activations": {0: "batch", 2: "layer_height", 3: "layer_width"},
    }
    with eval_mode(spec.module), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,  # the dynamo exporter needs onnxscript; this one is in torch
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes=dynamic,
            opset_version=opset,
        )
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {META_MODEL: spec.name, META_LAYER: layer_name})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def create_session(model: str | Path | bytes, threads: int | None = None, spinning: bool = False) -> ort.InferenceSession:
    """A session on ``model`` (a path, or a serialized graph) on the CUDA provider when onnxruntime-gpu sees a GPU, else the CPU.

    One intra-op pool of ``threads`` (None: ONNX Runtime's default, one per core) and no
    inter-op pool: a TorchServe worker runs one batch at a time, and several workers share
    the cores. Full graph optimisation (constant folding, conv+BN+activation fusion).
    ``spinning`` False (the default) stops the pool's threads busy-waiting after a run
    (``session.intra_op.allow_spinning``): the PyTorch head of the gradient methods, the
    other workers and the server share the same cores (README, "ONNX-trunk speed"), and
    ``whyserve eval`` alternates many small ONNX runs with PyTorch work.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if threads:
        options.intra_op_num_threads = threads
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=providers)
    _check_signature(session, "the rewritten graph" if isinstance(model, bytes) else model)
    return session


def _check_signature(session: ort.InferenceSession, path: str | Path) -> None:
    inputs = [(i.name, len(i.shape)) for i in session.get_inputs()]
    outputs = [(o.name, len(o.shape)) for o in session.get_outputs()]
    if inputs != [(INPUT, 4)] or outputs != [("logits", 2), ("activations", 4)]:
        raise InvalidOnnxModel(
            f"{path}: expected input 'input' (N, 3, H, W) and outputs 'logits' (N, classes), "
            f"'activations' (N, C, h, w); found inputs {inputs} and outputs {outputs} "
            "(name, rank). Export the model with `whyserve export-onnx`, or serve any .onnx as source onnx."
        )


def session_metadata(session: ort.InferenceSession) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)
