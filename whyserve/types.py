"""The types every layer shares: a method's result (``Explanation``), what a method needs
(``Needs``), a request checked once (``ResolvedRequest``) and what runs the passes
(``Backend``). This module imports no other whyserve module at run time."""

from __future__ import annotations

import enum
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from whyserve.methods.base import Method


@dataclass
class Explanation:
    """One image's explanation: maps are float32 in [0, 1], high = evidence for the answer."""

    method: str
    target: int
    contrast: int | float | None
    layer: str
    heatmap: np.ndarray  # (H, W): at the model's input size
    layer_heatmap: np.ndarray  # (h, w): at the target layer's size
    timing_ms: dict[str, float] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)  # method facts the reply reports (FGVis: game, p(e), ...)
    # The method's own outputs, by the name its ``Method.outputs`` declares (B-cos: bcos_color).
    artifacts: dict[str, object] = field(default_factory=dict)


class OutputKind(enum.Enum):
    """How a reply carries an output."""

    IMAGE = "image"  # (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or floats in [0, 1]: a PNG
    ARRAY = "array"  # (H, W) floats: {width, height, data} of numbers
    JSON = "json"  # JSON as it is


@dataclass(frozen=True)
class Output:
    """An output a method makes beyond the core ones (heatmap, overlay, values)."""

    kind: OutputKind
    help: str
    always: bool = False  # in every reply of the method, not asked for by ``outputs``
    decimals: int = 4  # ARRAY: the numbers' rounding


class Needs(enum.Enum):
    """What a method needs from the engine and the backend."""

    LAYER_GRADIENT = "gradients above the target layer"  # the shared forward records a graph from the layer up
    MASKED_FORWARDS = "masked forwards"  # gradient-free: plain forwards of the backend (also ONNX Runtime)
    MODEL_PASS = "a model-specific pass"  # its own pass through the PyTorch model (B-cos, VEBI)
    OPTIMISATION = "an optimisation over the input"  # iterates forwards/backwards through the PyTorch model (FGVis)


@dataclass(frozen=True)
class ResolvedRequest:
    """A request checked and resolved once (``Explainer.resolve``): what every later step uses.

    ``target`` is a class index (None: the top-1 of the shared forward), ``contrast`` a class
    index, a value (regression) or None (omitted: ``Method.contrast_for`` says what it means),
    ``options`` an instance of the method's options dataclass (``Method.options``)."""

    method: Method
    target: int | None = None
    contrast: int | float | None = None
    options: Any = None


class Backend(Protocol):
    """What runs one model's passes for an ``Explainer`` (``whyserve.backends``)."""

    @property
    def name(self) -> str:
        """What ran, as responses report it: ``torch:cpu``, ``onnxruntime:CPUExecutionProvider``."""

    @property
    def layer_name(self) -> str:
        """The target layer whose activations ``forward`` returns."""

    @property
    def device(self) -> torch.device:
        """Where input tensors must be."""

    @property
    def model(self) -> nn.Module | None:
        """The PyTorch model, for methods with their own pass (None: not PyTorch)."""

    @property
    def provides(self) -> frozenset[Needs]:
        """What methods may need of it (the engine matches ``Method.needs``)."""

    def why_not(self, needs: Needs) -> str:
        """ "; <why this backend cannot provide needs>", or "" when it can."""

    def running(self) -> AbstractContextManager[None]:
        """The context every pass of one batch runs in (eval mode, no graph by default)."""

    def forward(self, images: torch.Tensor, graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and target-layer activations of one pass; ``graph``: autograd from the layer up."""

    def masked_forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a plain pass (no hooks, no graph), inside ``running()``."""

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a plain pass, on its own."""
