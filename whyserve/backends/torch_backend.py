"""The PyTorch backend: every method; gradients only from the target layer up."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from whyserve.layers import LayerCapture, channels_last, eval_mode, find_target_layer, get_layer
from whyserve.models import ModelSpec
from whyserve.types import Needs


class TorchBackend:
    """Runs ``spec.module``; ``layer`` None: the spec's target layer or the last spatial one.

    The model is left as found: train/eval flags, hooks, requires_grad and the caller's grad
    mode (inference mode included) are the same afterwards.
    """

    def __init__(self, spec: ModelSpec, layer: str | None = None) -> None:
        self.model = spec.module
        self.layer_name = layer or spec.target_layer or find_target_layer(self.model, spec.input_size)
        self.layer = get_layer(self.model, self.layer_name)
        self.channels_last = channels_last(self.model, self.layer_name, spec.input_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def name(self) -> str:
        return f"torch:{self.device.type}"

    provides = frozenset(Needs)

    def why_not(self, needs: Needs) -> str:
        return ""

    @contextmanager
    def running(self) -> Iterator[None]:
        # Out of inference mode (TorchServe's) so a graph can be built; no graph by default.
        with eval_mode(self.model), torch.inference_mode(False), torch.no_grad():
            yield

    def forward(self, images: torch.Tensor, graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        capture = LayerCapture(self.layer, self.layer_name, graph=graph, channels_last=self.channels_last)
        try:
            output = self.model(images.clone() if images.is_inference() else images)
        finally:
            capture.remove()
        assert capture.activations is not None, "the target layer did not run"
        return output, capture.activations

    def masked_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)  # no capture hook: it is removed after the shared forward

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.model), torch.inference_mode():
            return self.model(images.to(self.device))
