"""The ONNX Runtime backend: predictions and gradient-free methods (Score-CAM) on an
``InferenceSession`` of a model exported by ``whyserve.onnx_runtime.export_onnx``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnxruntime as ort
import torch

from whyserve.methods.base import Method, Needs
from whyserve.onnx_runtime import INPUT, META_LAYER, OUTPUTS, session_metadata


class OrtBackend:
    model = None  # no PyTorch model: methods that need one are not supported
    device = torch.device("cpu")  # inputs cross to ONNX Runtime as NumPy arrays

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.layer_name = session_metadata(session).get(META_LAYER, "activations")

    @property
    def name(self) -> str:
        return f"onnxruntime:{self.session.get_providers()[0]}"

    def supports(self, method: Method) -> bool:
        return method.needs is Needs.MASKED_FORWARDS

    @contextmanager
    def running(self) -> Iterator[None]:
        with torch.no_grad():
            yield

    def forward(self, images: torch.Tensor, graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        logits, activations = self._run(list(OUTPUTS), images)
        return logits, activations

    def masked_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(["logits"], images)[0]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(["logits"], images)[0]

    def _run(self, outputs: list[str], images: torch.Tensor) -> list[torch.Tensor]:
        feed = {INPUT: np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)}
        return [torch.from_numpy(a) for a in self.session.run(outputs, feed)]
