"""What every CAM method shares: the result type, the map from channel weights, and
the template for gradient methods."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

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


class GradientMethod:
    """Template for Grad-CAM-like methods: weights are the spatial mean of dJ/dA.

    A subclass only says what J is for one image (``objective``); the engine sums the
    objectives of a batch, so one backward pass serves images with different targets.
    """

    name: str = ""
    needs_gradient = True

    def objective(self, output: torch.Tensor, target: int, contrast: int | float | None, task: str) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def channel_weights(grads: torch.Tensor) -> torch.Tensor:
        return grads.mean(dim=(2, 3))
