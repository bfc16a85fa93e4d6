"""Score-CAM (Wang et al., CVPRW 2020): channel weights from how well each activation
map, used as a mask on the input, alone keeps the target's score.

Gradient-free. Two named weightings:

- ``probability`` (the paper authors' code, haofanwang/Score-CAM cam/scorecam.py):
  H_k = minmax(upsample(A_k)) with bilinear ``align_corners=False``; alpha_k = softmax over
  classes of f(X * H_k) at the target; constant channels carry no mask and get alpha_k = 0.
  The map is theirs too (``authors_map``): upsample sum_k alpha_k A_k to the input size,
  then ReLU, then one min-max there.
- ``channel_softmax`` (pytorch-grad-cam's ScoreCAM): H_k = (u - min) / (max - min + 1e-8)
  of u = upsample(A_k) with ``align_corners=True``; alpha = softmax over channels of the
  target logits f(X * H_k). The map is pytorch-grad-cam's (``base.scale_cams``): ReLU and
  min-max at layer size, upsample, min-max again.

Every channel whose map is constant gives the all-zero mask, so the same masked input:
it is scored once, which keeps the result exact.

Fast mode (``channels=N``): only N channels are scored; the others get weight 0. With N >=
the number of channels it is the exact method. Two named rankings pick the N:

- ``target`` (default): the largest std(A_k) * max(0, c_k), where c_k = sum over space of
  dJ/dA_k * A_k is the channel's first-order contribution to the score the weighting uses:
  J = log_softmax(logits)[target] for ``probability`` (for a pooled linear head:
  (W[target, k] - sum_c p_c W[c, k]) times the channel's mean activation), the target logit
  for ``channel_softmax``. Why: with ``probability`` the exact weight is the target's
  probability of the masked image, so a class far from the top gains from what it wins against
  the competing classes, which the log-probability counts and the raw logit does not (with
  ``channel_softmax`` the weight is a softmax of the raw logits); and a channel adds to the
  map's shape (what the correlation with the exact map sees) by its weight times its spatial
  variation, not its mean. Channels with c_k <= 0 rank after all others, by spread. One pass
  with a graph above the layer, on either backend.
- ``spread`` (tf-keras-vis's Faster-ScoreCAM): the maps that vary most (spatial standard
  deviation), blind to the target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from whyserve.methods.base import Explanation, Method, MethodBatch, Needs, ResolvedRequest, cam_explanations, minmax, weighted_cam
from whyserve.methods.registry import register
from whyserve.options import option

if TYPE_CHECKING:
    from whyserve.backends import Backend

WEIGHTINGS = ("probability", "channel_softmax")
RANKINGS = ("target", "spread")


@dataclass(frozen=True)
class ScoreCamOptions:
    weighting: str = option(
        "probability",
        "probability: the authors' (the target's softmax over classes of each masked image); "
        "channel_softmax: pytorch-grad-cam's (a softmax over channels of the target logits)",
        choices=WEIGHTINGS,
    )
    channels: int | None = option(
        None, "how many channels are scored: all (exact) or the first N of the ranking (fast)", low=1, none_word="all"
    )
    ranking: str = option(
        "target",
        "which N channels fast mode scores: target (estimated contribution to the target, times spread) "
        "or spread (the most varying maps)",
        choices=RANKINGS,
    )


@register
class ScoreCAM(Method):
    name = "scorecam"
    needs = Needs.MASKED_FORWARDS
    options = ScoreCamOptions
    help = "why P? gradient-free; weighting probability|channel_softmax; channels all|N (fast); ranking target|spread"

    def cost(self, request: ResolvedRequest, layer_channels: int, chunk: int) -> float:
        channels = request.options.channels
        if channels is None or channels >= layer_channels:
            return float(layer_channels)
        return float(channels) + (request.options.ranking == "target")  # its pass with a graph above the layer

    def compute(self, batch: MethodBatch) -> list[Explanation]:
        cams: list[torch.Tensor] = []
        timings: list[float] = []
        authors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        details: list[dict[str, object]] = []
        for i, target, request in zip(batch.rows, batch.targets, batch.requests):
            start = time.perf_counter()
            options = request.options
            activations = batch.activations[i]
            fast = options.channels is not None and options.channels < activations.shape[0]
            ranked = fast and options.ranking == "target"
            priority = target_priority(batch.backend, batch.images[i], target, options.weighting) if ranked else None
            # which N were scored; a backend without a gradient (a bare .onnx) ranks by spread, said so
            details.append({"ranking": "target" if priority is not None else "spread"} if fast else {})
            if ranked and priority is None:
                details[-1]["ranking_fallback"] = "the target ranking needs a gradient above the layer, which this model lacks"
            weights = scorecam_weights(
                batch.backend.masked_forward,
                batch.images[i],
                activations,
                target,
                options.weighting,
                batch.chunk,
                options.channels,
                priority,
            )
            cams.append(weighted_cam(weights[None], activations[None])[0])
            if options.weighting == "probability":  # the authors' map, scaled once at input size
                height, width = batch.images.shape[-2:]
                authors[len(cams) - 1] = authors_map(weights, activations, (int(height), int(width)))
            timings.append((time.perf_counter() - start) * 1e3)
        explanations = cam_explanations(batch, torch.stack(cams), timings)
        for explanation, facts in zip(explanations, details):
            explanation.details = facts
        for k, (layer_map, heatmap) in authors.items():
            explanations[k].layer_heatmap, explanations[k].heatmap = layer_map.cpu().numpy(), heatmap.cpu().numpy()
        return explanations


def scorecam_weights(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    activations: torch.Tensor,
    target: int,
    weighting: str,
    chunk: int,
    channels: int | None = None,
    priority: torch.Tensor | None = None,
) -> torch.Tensor:
    """Channel weights (K,) for one image (C, H, W) with activations (K, h, w).

    ``forward`` must be a plain, hook-free, gradient-free call of the model (PyTorch or
    ONNX Runtime); at most ``chunk`` masked images are built and scored at a time.
    ``channels=None`` scores all channels (exact), an int N only N: the N largest ``priority``
    (K,) values, or (None) the N most varying.
    """
    size = image.shape[-2:]
    align = weighting == "channel_softmax"
    flat = activations.flatten(1)
    varying = torch.nonzero(flat.amax(1) > flat.amin(1)).flatten()
    fast = channels is not None and channels < activations.shape[0]
    if channels is not None and fast:  # the first N non-constant channels by priority, or the most varying
        rank = flat[varying].std(1) if priority is None else priority[varying]
        varying = varying[rank.topk(min(channels, len(varying))).indices]

    scores = torch.zeros(activations.shape[0], dtype=torch.float32, device=image.device)
    for start in range(0, len(varying), chunk):
        picked = varying[start : start + chunk]
        up = F.interpolate(activations[picked][:, None], size=size, mode="bilinear", align_corners=align)
        low = up.amin(dim=(2, 3), keepdim=True)
        high = up.amax(dim=(2, 3), keepdim=True)
        masks = (up - low) / (high - low + (1e-8 if align else 0.0))
        scores[picked] = _score(forward(image[None] * masks), target, weighting)

    if weighting == "probability":
        return scores  # constant (and in fast mode unscored) channels keep weight 0
    if fast:
        weights = torch.zeros_like(scores)
        weights[varying] = torch.softmax(scores[varying], dim=0)
        return weights
    if len(varying) < activations.shape[0]:
        constant_score = _score(forward(torch.zeros_like(image)[None]), target, weighting)
        constant = torch.ones_like(scores, dtype=torch.bool)
        constant[varying] = False
        scores[constant] = constant_score
    return torch.softmax(scores, dim=0)


def target_priority(backend: Backend, image: torch.Tensor, target: int, weighting: str = "probability") -> torch.Tensor | None:
    """The ``target`` ranking's priority (K,) (module docstring): std(A_k) * c_k where c_k =
    sum over space of dJ/dA_k * A_k (J: the weighting's score, log_softmax(logits)[target] or
    the target logit) is positive, else (ranked last, by spread) std(A_k) - max std - 1. From
    one pass with a graph above the layer; None where the backend has no graph (an ONNX model
    whose head cannot be split: the spread ranking is used)."""
    with torch.no_grad():  # the capture hook turns grad mode on: off again on exit
        logits, activations = backend.forward(image[None], graph=True)
        if not logits.requires_grad:
            return None
        with torch.enable_grad():
            scores = torch.log_softmax(logits[0].float(), dim=0) if weighting == "probability" else logits[0]
            (grads,) = torch.autograd.grad(scores[target], activations)
    activations = activations.detach()[0]
    contribution = (grads[0] * activations).sum(dim=(1, 2))
    spread = activations.flatten(1).std(1)
    return torch.where(contribution > 0, contribution * spread, spread - spread.max() - 1)


def _score(logits: torch.Tensor, target: int, weighting: str) -> torch.Tensor:
    if weighting == "probability":
        return torch.softmax(logits.float(), dim=1)[:, target]
    return logits[:, target].float()


def authors_map(weights: torch.Tensor, activations: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' post-processing for weights (K,) and activations (K, h, w): the layer-size
    map minmax(ReLU(sum_k w_k A_k)) (for display) and the heatmap minmax(ReLU(upsample(sum_k
    w_k A_k))) at ``size``. Upsampling is linear, so upsampling the sum equals their sum of
    upsampled maps; a constant map gives zeros (where the authors return None)."""
    cam = torch.einsum("k,khw->hw", weights, activations)[None]
    heatmap = F.interpolate(cam[None], size=size, mode="bilinear", align_corners=False)[0]
    return minmax(torch.relu(cam))[0], minmax(torch.relu(heatmap), eps=0.0)[0]
