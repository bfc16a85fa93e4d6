"""Backends: what runs the model's forward passes for one ``Explainer``.

``TorchBackend`` (PyTorch: every method) and ``OrtBackend`` (ONNX Runtime: gradient-free
methods, and gradient methods with the head above the layer in PyTorch) share the small
interface ``Backend``; ``open_backend`` picks one at load.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from whyserve.methods.base import Method
from whyserve.models import ModelSpec

BACKENDS = ("torch", "onnxruntime")


class Backend(Protocol):
    name: str  # what ran, as responses report it: "torch:cpu", "onnxruntime:CPUExecutionProvider"
    layer_name: str  # the target layer whose activations ``forward`` returns
    device: torch.device  # where input tensors must be
    model: nn.Module | None  # the PyTorch model, for methods with their own pass (None: not PyTorch)

    def supports(self, method: Method) -> bool: ...

    def why_not(self, method: Method) -> str:
        """ "; <why this backend cannot run method>", or "" when it can."""

    def running(self) -> AbstractContextManager[None]:
        """The context every pass of one batch runs in (eval mode, no graph by default)."""

    def forward(self, images: torch.Tensor, graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and target-layer activations of one pass; ``graph``: autograd from the layer up."""

    def masked_forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a plain pass (no hooks, no graph), inside ``running()``."""

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a plain pass, on its own."""


def open_backend(
    kind: str, spec: ModelSpec, weights: str | Path | None = None, layer: str | None = None, threads: int | None = None
) -> Backend:
    """The backend named ``kind``: ``torch`` (``spec``'s module, ``layer``), or ``onnxruntime``
    (``weights`` is an .onnx from `whyserve export-onnx`, or ``spec`` is source onnx's rewritten
    graph; ``threads`` its intra-op pool)."""
    if kind == "torch":
        from whyserve.backends.torch_backend import TorchBackend

        return TorchBackend(spec, layer)
    if kind == "onnxruntime":
        from whyserve.backends.ort_backend import OrtBackend
        from whyserve.models.onnx_source import OnnxModel
        from whyserve.onnx_runtime import create_session

        if isinstance(spec.module, OnnxModel):  # source onnx: the graph rewritten at load, no PyTorch model
            return OrtBackend(create_session(spec.module.serialized, threads))
        if not weights:
            raise ValueError("backend onnxruntime needs the .onnx file as the archive's serialized file")
        return OrtBackend(create_session(weights, threads), spec)
    raise ValueError(f"unknown backend {kind!r}; known: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "open_backend"]
