"""What every explanation method shares: the result type, the method interface, the batch a
method's compute step receives, and the CAM arithmetic (map from channel weights, scaling)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from whyserve.options import NoOptions, declared

if TYPE_CHECKING:
    from whyserve.backends import Backend
    from whyserve.models import ModelSpec

# pytorch-grad-cam's scale_cam_image divides by (max + 1e-7); the same epsilon keeps parity.
_EPS = 1e-7


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
    # B-cos only (whyserve.methods.bcos): the signed contribution map (H, W), which sums to
    # the logit (or logit difference), and the RGBA colour image (H, W, 4) in [0, 1].
    contributions: np.ndarray | None = None
    color_image: np.ndarray | None = None
    # FGVis only (whyserve.methods.fgvis): the explanation image e as 8-bit RGB (H, W, 3), a valid
    # model input; ``details``: method facts the response reports (game, iterations, p(e), ...).
    image: np.ndarray | None = None
    details: dict[str, object] = field(default_factory=dict)
    # VEBI only (whyserve.methods.vebi): the features shown, [{layer, channel, relevance}], sorted.
    features: list[dict] | None = None


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


@dataclass
class MethodBatch:
    """What a method's ``compute`` receives: the rows of the batch that asked for it (or for a
    method of the same ``group``), and everything the shared forward produced."""

    rows: list[int]  # indices into images / logits / activations
    requests: list[ResolvedRequest]  # one per row
    targets: list[int]  # resolved target per row (top-1 filled in)
    images: torch.Tensor  # (B, C, H, W): the whole batch, preprocessed, on the backend's device
    logits: torch.Tensor  # (B, outputs) of the shared forward (with a graph above the layer for LAYER_GRADIENT)
    activations: torch.Tensor  # (B, K, h, w) target-layer activations (the graph's leaf for LAYER_GRADIENT)
    backend: Backend
    spec: ModelSpec
    chunk: int  # at most this many extra images per forward (masked or perturbed inputs)

    def contrast(self, k: int) -> int | float | None:
        """Row ``k``'s contrast, an omitted one resolved by the method."""
        request = self.requests[k]
        return request.method.contrast_for(self.targets[k], request.contrast)


class Method:
    """An explanation method: subclass it in a file of its own and decorate it with
    ``whyserve.methods.register``. The engine and the serving layer need nothing else."""

    name: ClassVar[str] = ""
    needs: ClassVar[Needs] = Needs.LAYER_GRADIENT
    takes_contrast: ClassVar[bool] = False
    # Said to a client who sends contrast == target: what omitting the contrast would ask for.
    omitted_contrast: ClassVar[str] = ""
    # This method's options (besides method/target/contrast): a dataclass of ``option()`` fields.
    options: ClassVar[type] = NoOptions
    # Rows of methods with the same group are computed by one ``compute`` call (one backward pass).
    group: ClassVar[str] = ""
    help: ClassVar[str] = ""

    def supports(self, spec: ModelSpec) -> bool:
        """Whether this method can explain ``spec``'s model (B-cos needs a B-cos model)."""
        return True

    def requirement(self) -> str:
        """What a model needs for this method, said to a client whose model lacks it ("" : nothing to say)."""
        return ""

    @property
    def option_names(self) -> tuple[str, ...]:
        """The names of this method's options, as a request spells them."""
        return tuple(d.name for d in declared(self.options))

    def check(self, request: ResolvedRequest, spec: ModelSpec) -> None:
        """Refuse a request this method cannot answer for ``spec`` (after target/contrast resolved)."""

    def contrast_for(self, target: int, contrast: int | float | None) -> int | float | None:
        """The contrast that is explained (and reported) for a resolved request."""
        return contrast

    def cost(self, request: ResolvedRequest, layer_channels: int, chunk: int) -> float:
        """Rough cost in single-image forward-pass equivalents, beyond the shared forward."""
        return 1.0

    def compute(self, batch: MethodBatch) -> list[Explanation]:
        """One ``Explanation`` per row of ``batch`` (timings are filled in by the engine)."""
        raise NotImplementedError


def weighted_cam(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_k w_k A_k): weights (B, K), activations (B, K, h, w) -> (B, h, w)."""
    return torch.relu(torch.einsum("bk,bkhw->bhw", weights, activations))


def scale_cams(cams: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image min-max at layer size, bilinear upsampling to ``size``, min-max again.

    The same steps and arithmetic as pytorch-grad-cam (scale_cam_image, whose cv2.resize
    upsamples with half-pixel centres, i.e. align_corners=False, then its final rescale).
    """
    layer_maps = minmax(cams)
    heatmaps = F.interpolate(layer_maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return layer_maps, minmax(heatmaps)


def minmax(maps: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Per-map (B, h, w) min-max to [0, 1]; ``eps=0`` divides exactly (a constant map gives 0)."""
    shifted = maps - maps.flatten(1).min(1).values[:, None, None]
    top = shifted.flatten(1).max(1).values[:, None, None]
    return shifted / (top + eps) if eps else shifted / torch.where(top > 0, top, torch.ones_like(top))


def cam_explanations(batch: MethodBatch, cams: torch.Tensor, timings: list[float] | None = None) -> list[Explanation]:
    """Explanations of layer-resolution CAMs (one per row of ``batch``), scaled as Grad-CAM's."""
    layer_maps, heatmaps = scale_cams(cams, tuple(batch.images.shape[-2:]))
    return [
        Explanation(
            method=request.method.name,
            target=batch.targets[k],
            contrast=batch.contrast(k),
            layer=batch.backend.layer_name,
            heatmap=heatmaps[k].cpu().numpy(),
            layer_heatmap=layer_maps[k].cpu().numpy(),
            timing_ms={"explain": timings[k]} if timings else {},
        )
        for k, request in enumerate(batch.requests)
    ]
