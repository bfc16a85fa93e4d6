"""The ONNX Runtime backend: predictions and Score-CAM on an ``InferenceSession`` of a model
exported by ``whyserve.backends.onnx.runtime.export_onnx``, and gradient methods by splitting the
model at the target layer: ONNX Runtime runs the trunk (input -> activations), the head above
the layer (``whyserve.backends.onnx.split``) runs in PyTorch, so autograd starts at the layer as in
``TorchBackend`` and the maps equal its own.

The .onnx keeps its full-model ``logits`` output: predictions and Score-CAM's masked forwards
use it (no PyTorch at all); the head recomputes the logits only for passes with a graph.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from whyserve.backends.onnx.runtime import OUTPUTS, session_metadata
from whyserve.backends.onnx.split import HeadSplitError, split_head
from whyserve.layers import eval_mode
from whyserve.models import ModelSpec
from whyserve.models.onnx_source import INPUT, META_LAYER
from whyserve.types import Needs

logger = logging.getLogger(__name__)
# The head's logits from ONNX Runtime's activations must match ONNX Runtime's logits (same weights).
HEAD_TOLERANCE = 1e-3


class OrtBackend:
    model = None  # no PyTorch model for methods with their own pass (B-cos, FGVis)
    device = torch.device("cpu")  # inputs cross to ONNX Runtime as NumPy arrays

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec | None = None) -> None:
        self.session = session
        self.layer_name = session_metadata(session).get(META_LAYER, "activations")
        self.batch_of_one = session.get_inputs()[0].shape[0] == 1  # an exporter fixed the batch: one image a run
        self.head: nn.Module | None = None
        self.head_error = (
            "ONNX has no autograd and no PyTorch model came with the .onnx: serve scorecam here, or the PyTorch "
            "model (source torchvision:, timm:, python: or model_file) for gradient methods"
        )
        if spec is not None:
            try:
                self.head = self._checked_head(spec)
            except HeadSplitError as error:
                self.head_error = str(error)
                logger.warning("gradient methods unavailable on ONNX Runtime: %s", error)

    @property
    def name(self) -> str:
        return f"onnxruntime:{self.session.get_providers()[0]}"

    @property
    def provides(self) -> frozenset[Needs]:
        return frozenset({Needs.MASKED_FORWARDS} | ({Needs.LAYER_GRADIENT} if self.head is not None else set()))

    def why_not(self, needs: Needs) -> str:
        return "" if needs in self.provides else f"; not on ONNX Runtime: {self.head_error}"

    @contextmanager
    def running(self) -> Iterator[None]:
        # Out of inference mode (TorchServe's), so the activations can be autograd's leaf.
        with eval_mode(self.head or nn.Identity()), torch.inference_mode(False), torch.no_grad():
            yield

    def forward(self, images: torch.Tensor, graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        logits, activations = self._run(list(OUTPUTS), images)
        if not graph or self.head is None:
            return logits, activations
        activations.requires_grad_(True)
        with torch.enable_grad():
            # A clone, so an in-place op of the head cannot modify the leaf.
            return self.head(activations.clone()), activations

    def masked_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(["logits"], images)[0]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(["logits"], images)[0]

    def _run(self, outputs: list[str], images: torch.Tensor) -> list[torch.Tensor]:
        def run(rows: torch.Tensor) -> list[np.ndarray]:
            return self.session.run(outputs, {INPUT: np.ascontiguousarray(rows.detach().cpu().numpy(), dtype=np.float32)})

        if not self.batch_of_one:
            return [torch.from_numpy(a) for a in run(images)]
        return [torch.from_numpy(np.concatenate(arrays)) for arrays in zip(*map(run, torch.split(images, 1)))]

    def _checked_head(self, spec: ModelSpec) -> nn.Module:
        """``spec``'s head above the layer, checked against the .onnx on one probe image."""
        head = split_head(spec.module, self.layer_name)
        probe = torch.linspace(-1, 1, 3 * spec.input_size[0] * spec.input_size[1]).reshape(1, 3, *spec.input_size)
        logits, activations = self._run(list(OUTPUTS), probe)
        with eval_mode(head), torch.no_grad():
            difference = float((head(activations) - logits).abs().max())
        if difference > HEAD_TOLERANCE:
            raise HeadSplitError(
                f"the head of model {spec.name!r} above {self.layer_name!r} does not reproduce the .onnx logits "
                f"(max difference {difference:.3g} > {HEAD_TOLERANCE}): the .onnx was exported from other weights"
            )
        return head
