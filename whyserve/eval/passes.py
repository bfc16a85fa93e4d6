"""The forward passes of ``whyserve eval``: PyTorch where a graph or the module is needed,
ONNX Runtime for every plain pass, and each masked image scored once.

``EvalBackend`` is a ``TorchBackend`` (the shared forward, Grad-CAM, contrastive and B-cos
run in PyTorch as served) whose plain passes, Score-CAM's masked forwards and the metrics'
``predict``, run on an ONNX Runtime session of the same model (``export_onnx``): on these
small CNNs it is several times faster than PyTorch on the CPU, and its logits equal
PyTorch's to ~1e-5 (``tests/test_onnx_runtime.py``).

Score-CAM's masked images depend on the image and the layer's activations, not on the target
(the target only picks which softmax entry is the weight), so inside ``shared_masks()`` the
logits of each masked image are kept, keyed by a digest of its bytes: the four cells of a mixed
grid share one set of masked forwards. The weights and maps are unchanged
(``tests/test_eval_passes.py``).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import onnxruntime as ort
import torch

from whyserve.backends.onnx.backend import OrtBackend
from whyserve.backends.onnx.runtime import create_session, export_onnx
from whyserve.backends.torch_backend import TorchBackend
from whyserve.models import ModelSpec


class EvalBackend(TorchBackend):
    """``TorchBackend`` with plain passes on ``session`` (None: PyTorch) and, inside
    ``shared_masks()``, each masked image's logits kept and reused."""

    def __init__(self, spec: ModelSpec, session: ort.InferenceSession | None = None) -> None:
        super().__init__(spec)
        self.ort = None if session is None else OrtBackend(session)  # its logits only: no head needed
        self.cache: dict[bytes, torch.Tensor] | None = None  # None: not sharing
        self.hits = 0  # masked images answered from the cache

    @contextmanager
    def shared_masks(self) -> Iterator[None]:
        """Masked images seen twice in the block are scored once (hashing costs ~1 ms per
        224 x 224 image, so only where images repeat: the cells of one grid)."""
        self.cache = {}
        try:
            yield
        finally:
            self.cache = None

    def masked_forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            return self._plain(images)
        logits, hits = cached_forward(self.cache, images, self._plain)
        self.hits += hits
        return logits

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return super().predict(images) if self.ort is None else self.ort.predict(images)

    def _plain(self, images: torch.Tensor) -> torch.Tensor:
        return super().masked_forward(images) if self.ort is None else self.ort.masked_forward(images)


def cached_forward(
    cache: dict[bytes, torch.Tensor], images: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """The logits of ``images`` (N, C, H, W), each distinct image (a 16-byte digest of its
    bytes) run through ``forward`` once and kept in ``cache``; and how many came from it."""
    keys = [hashlib.blake2b(image.numpy().tobytes(), digest_size=16).digest() for image in images.detach().cpu()]
    first: dict[bytes, int] = {}
    for i, key in enumerate(keys):
        if key not in cache:
            first.setdefault(key, i)
    missing = list(first.values())
    if missing:
        for i, logits in zip(missing, forward(images[missing])):
            cache[keys[i]] = logits
    return torch.stack([cache[key] for key in keys]), len(keys) - len(missing)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch on ``threads`` intra-op threads inside the block (None: unchanged), then back
    (the setting is process-wide)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def eval_backend(spec: ModelSpec, onnx: bool = True) -> EvalBackend:
    """``spec``'s ``EvalBackend``, its plain passes on ONNX Runtime unless ``onnx`` is False."""
    if not onnx:
        return EvalBackend(spec)
    with tempfile.TemporaryDirectory() as tmp:  # the session holds the model: the file can go
        return EvalBackend(spec, create_session(export_onnx(spec, Path(tmp) / f"{spec.name}.onnx")))
