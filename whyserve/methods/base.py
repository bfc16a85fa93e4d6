"""What every explanation method shares: the method interface, the batch a method's compute
step receives, and the CAM arithmetic (map from channel weights, scaling). The result and
request types are ``whyserve.types``' (re-exported here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from whyserve.options import NoOptions, declared
from whyserve.types import Backend, Explanation, Needs, Output, OutputKind, ResolvedRequest

if TYPE_CHECKING:
    from whyserve.models import ModelSpec

__all__ = ["Explanation", "Method", "MethodBatch", "Needs", "Output", "OutputKind", "ResolvedRequest"]

# pytorch-grad-cam's scale_cam_image divides by (max + 1e-7); the same epsilon keeps parity.
_EPS = 1e-7


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
    # What this method makes beyond heatmap, overlay and values, by the name a reply uses.
    outputs: ClassVar[Mapping[str, Output]] = {}
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
    height, width = batch.images.shape[-2:]
    layer_maps, heatmaps = scale_cams(cams, (int(height), int(width)))
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
