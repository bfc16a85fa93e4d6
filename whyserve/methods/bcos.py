"""B-cos contribution maps (Böhle et al., CVPR 2022; B-cos v2, 2023).

A B-cos network is dynamic linear: y(x) = W(x) x. In explanation mode (every module with
``set_explanation_mode``, e.g. the ``bcos`` package's ``BcosConv2d`` and its norms, detaches
its dynamic scale), the gradient of a logit with respect to the encoded input
x = [r, g, b, 1-r, 1-g, 1-b] is exactly W(x)[target], so

    contribution map  C = sum over the 6 channels of  x * W(x)[target]      (H, W)

sums to the logit (minus its bias; B-cos models have none). Contrastive B-cos ("why P,
rather than Q?") is the same for y_P - y_Q: C_P - C_Q, which sums to the logit difference.

The encoded input is the output of the module named by the network's ``bcos_input`` attribute
(the network takes RGB in [0, 1] and encodes it itself), so the model stays callable like
any other and the maps are over the six channels the B-cos layers really see.

Heatmap convention (the shared ``Explanation.heatmap``, float32 in [0, 1]): the positive
contributions divided by their maximum (all zeros if nothing contributes positively). The
signed map itself is the ``contributions`` output, and the B-cos colour image
(RGBA, colour from the direction of W(x), alpha from its norm where the contribution is
positive, as the B-cos papers render it; the ``bcos`` package's ``gradient_to_image``) in
the ``bcos_color`` output.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar, cast

import numpy as np
import torch
from torch import nn

from whyserve.layers import LayerCapture, get_layer
from whyserve.methods.base import Explanation, Method, MethodBatch, Needs, Output, OutputKind
from whyserve.methods.registry import register

if TYPE_CHECKING:
    from whyserve.models import ModelSpec


@contextmanager
def explanation_mode(model: nn.Module) -> Iterator[None]:
    """Detach the dynamic weights of every B-cos module; give each its own flag back after."""
    modules = [m for m in model.modules() if hasattr(m, "set_explanation_mode")]
    flags = [bool(getattr(m, "is_in_explanation_mode", False)) for m in modules]
    for m in modules:
        m.set_explanation_mode(True)  # type: ignore[operator]  # the bcos package's, untyped
    try:
        yield
    finally:
        for m, flag in zip(modules, flags):
            m.set_explanation_mode(flag)  # type: ignore[operator]


def contributions(
    model: nn.Module,
    input_layer: str,
    images: torch.Tensor,
    targets: list[int],
    contrasts: list[int | None],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (B, K), the encoded inputs x (B, 6, H, W) and the dynamic linear weights
    W(x) (B, 6, H, W) of y_target (minus y_contrast where one is given).

    One forward in explanation mode with autograd from the encoded input up; one backward.
    Call it in eval mode (batch norm with running statistics: images are independent).
    """
    capture = LayerCapture(get_layer(model, input_layer), input_layer, graph=True)
    try:
        with explanation_mode(model), torch.no_grad():  # the hook turns grad on above the encoder
            output = model(images)
            with torch.enable_grad():
                objective = sum(
                    output[i, t] - (output[i, q] if q is not None else 0.0) for i, (t, q) in enumerate(zip(targets, contrasts))
                )
                assert capture.activations is not None, "the encoded input did not run"
                (weights,) = torch.autograd.grad(objective, capture.activations)
    finally:
        capture.remove()
    assert capture.activations is not None
    return output.detach(), capture.activations.detach(), weights.detach()


def positive_heatmap(contribution: torch.Tensor) -> torch.Tensor:
    positive = contribution.clamp(min=0)
    top = positive.max()
    return positive / top if top > 0 else positive


def color_image(encoded: torch.Tensor, weights: torch.Tensor, smooth: int = 15, alpha_percentile: float = 99.5) -> np.ndarray:
    """(H, W, 4) float32 RGBA in [0, 1]: the B-cos papers' rendering of W(x) (``bcos`` package)."""
    from bcos.common import gradient_to_image

    return gradient_to_image(encoded, weights, smooth=smooth, alpha_percentile=alpha_percentile).astype(np.float32)


@register
class Bcos(Method):
    """B-cos models only: the network names its encoded-input module in its ``bcos_input`` attribute."""

    name = "bcos"
    needs = Needs.MODEL_PASS
    takes_contrast = True
    omitted_contrast = "the plain B-cos map of the target"
    help = "B-cos models: the exact contribution map sum_c x*W(x) (with a contrast: of y_P - y_Q)"
    outputs: ClassVar[Mapping[str, Output]] = {
        "bcos_color": Output(OutputKind.IMAGE, "the B-cos papers' RGBA colour image of W(x) (PNG)"),
        "contributions": Output(
            OutputKind.ARRAY, "the signed contribution map at input size, which sums to the logit (or difference)", decimals=7
        ),
    }

    def supports(self, spec: ModelSpec) -> bool:
        return isinstance(getattr(spec.module, "bcos_input", None), str)

    def requirement(self) -> str:
        # B-cos maps are exact only for a network built of B-cos layers; on any other they would be a gradient x input
        return "bcos needs a B-cos network (the bcos package's layers, as flowers_bcos); gradcam or contrastive explain any other"

    def cost(self, request: object, layer_channels: int, chunk: int) -> float:
        return 2.0  # one forward in explanation mode and one backward to the input

    def compute(self, batch: MethodBatch) -> list[Explanation]:
        contrasts = [cast("int | None", batch.contrast(k)) for k in range(len(batch.rows))]  # classifiers: an index
        model, encoded_input = batch.backend.model, getattr(batch.spec.module, "bcos_input", None)
        assert model is not None and isinstance(encoded_input, str), "supports() and MODEL_PASS guarantee both"
        return explain(model, encoded_input, batch.images[batch.rows], batch.targets, contrasts)


def explain(
    model: nn.Module,
    input_layer: str,
    images: torch.Tensor,
    targets: list[int],
    contrasts: list[int | None],
) -> list[Explanation]:
    """One ``Explanation`` per image (without timings; the engine adds them)."""
    _, encoded, weights = contributions(model, input_layer, images, targets, contrasts)
    maps = (encoded * weights).sum(1)  # (B, H, W)
    return [_explanation(maps[i], encoded[i], weights[i], targets[i], contrasts[i], input_layer) for i in range(len(targets))]


def _explanation(
    contribution: torch.Tensor, encoded: torch.Tensor, weights: torch.Tensor, target: int, contrast: int | None, layer: str
) -> Explanation:
    heatmap = positive_heatmap(contribution).float().cpu().numpy()
    return Explanation(
        method=Bcos.name,
        target=target,
        contrast=contrast,
        layer=layer,
        heatmap=heatmap,
        layer_heatmap=heatmap,
        artifacts={
            "bcos_color": color_image(encoded, weights),
            "contributions": contribution.float().cpu().numpy(),
        },
    )
