"""Backends: what runs the model's forward passes for one ``Explainer``.

``TorchBackend`` (PyTorch: every method) and ``OrtBackend`` (ONNX Runtime: gradient-free
methods, and gradient methods with the head above the layer in PyTorch) share the small
interface ``Backend``; ``open_backend`` picks one at load.
"""

from __future__ import annotations

from pathlib import Path

from whyserve.models import ModelSpec
from whyserve.types import Backend

BACKENDS = ("torch", "onnxruntime")


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
        from whyserve.backends.onnx.backend import OrtBackend
        from whyserve.backends.onnx.runtime import create_session
        from whyserve.models.onnx_source import OnnxModel

        if isinstance(spec.module, OnnxModel):  # source onnx: the graph rewritten at load, no PyTorch model
            return OrtBackend(create_session(spec.module.serialized, threads))
        if not weights:
            raise ValueError("backend onnxruntime needs the .onnx file as the archive's serialized file")
        return OrtBackend(create_session(weights, threads), spec)
    raise ValueError(f"unknown backend {kind!r}; known: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "open_backend"]
