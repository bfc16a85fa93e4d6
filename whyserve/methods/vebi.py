"""VEBI (Oramas et al., ICLR 2019): why P? shown through the model's own features that are
relevant for P.

With the class weights w_c fitted once (``whyserve.vebi.fit``, the model's relevance file):
x = the image's filter responses (``whyserve.vebi.features``), L2-normalised; the relevance
of feature j for the target c is r_j = x_j * w_cj / sum(w_c); the top k (default 3)
features with positive relevance are shown: each one's activation map alone is propagated
to the pixels (``whyserve.vebi.propagation``: guided backpropagation with the stride fix),
turned into a map (max |signal| over colour channels), min-max normalised; the heatmap is
their pixel-wise maximum. The explanation lists those features (layer, channel,
relevance), sorted by relevance: the "interpretation".
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from whyserve.layers import eval_mode
from whyserve.methods.base import Explanation, Method, MethodBatch, Needs, Output, OutputKind, ResolvedRequest
from whyserve.methods.registry import register
from whyserve.options import option
from whyserve.shipped import RELEVANCE_SUFFIX, weights_folder
from whyserve.vebi.features import capture, responses
from whyserve.vebi.fit import Relevance
from whyserve.vebi.propagation import propagate, saliency

if TYPE_CHECKING:
    from whyserve.models import ModelSpec

NAME = "vebi"
DEFAULT_FEATURES = 3
MAX_FEATURES = 16
RELEVANCE = "vebi_relevance"  # the role of the relevance file in ``ModelSpec.files``


@dataclass(frozen=True)
class VebiOptions:
    features: int = option(DEFAULT_FEATURES, "how many relevant internal features are shown", low=1, high=MAX_FEATURES)


@dataclass(frozen=True)
class Feature:
    layer: str
    channel: int
    relevance: float

    def to_json(self) -> dict[str, object]:
        return {"layer": self.layer, "channel": self.channel, "relevance": self.relevance}


def image_responses(model: nn.Module, relevance: Relevance, images: torch.Tensor) -> torch.Tensor:
    """x (B, D) of ``images`` over the relevance file's layers; no graph."""
    with torch.inference_mode(False), eval_mode(model), torch.no_grad(), capture(model, relevance.index.layers) as kept:
        model(images.clone() if images.is_inference() else images)
        return responses(kept, relevance.index.layers)


def relevances(relevance: Relevance, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """r (B, D): x_j * w_cj / sum(w_c) with x L2-normalised per image."""
    x = x.double() / x.double().norm(dim=1, keepdim=True).clamp(min=1e-12)
    w = relevance.weights[targets].to(x.device)
    return x * w / w.sum(1, keepdim=True)


def top_features(relevance: Relevance, r: torch.Tensor, k: int) -> list[Feature]:
    """The k features of highest positive relevance (fewer if fewer are positive), sorted."""
    values, indices = r.topk(min(k, r.numel()))
    return [Feature(*relevance.index.locate(int(j)), float(v)) for v, j in zip(values.tolist(), indices.tolist()) if v > 0]


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each map of (k, H, W) scaled to [0, 1] (a constant map becomes 0)."""
    maps = maps.double()
    low = maps.flatten(1).amin(1)[:, None, None]
    span = (maps.flatten(1).amax(1)[:, None, None] - low).clamp(min=1e-12)
    return (maps - low) / span


def feature_heatmap(model: nn.Module, image: torch.Tensor, features: list[Feature]) -> np.ndarray:
    """Pixel-wise max of the min-max-normalised propagated maps of ``features`` (H, W)."""
    if not features:
        return np.zeros(image.shape[-2:], dtype=np.float32)
    maps = saliency(propagate(model, image, [(f.layer, f.channel) for f in features]))
    return minmax(maps).amax(0).float().cpu().numpy()


def explain(
    model: nn.Module, relevance: Relevance, images: torch.Tensor, targets: list[int], k: int = DEFAULT_FEATURES
) -> list[tuple[np.ndarray, list[Feature]]]:
    """Per image: (heatmap (H, W) float32 in [0, 1], the features shown, positive and sorted)."""
    r = relevances(relevance, image_responses(model, relevance, images), targets)
    out = []
    for i in range(len(targets)):
        features = top_features(relevance, r[i], k)
        out.append((feature_heatmap(model, images[i], features), features))
    return out


@functools.lru_cache(maxsize=8)
def load_relevance(path: str) -> Relevance:
    return Relevance.load(path)


def models_with_relevance() -> list[str]:
    """The models whose relevance file ships with whyserve (``whyserve vebi-fit`` writes them)."""
    return sorted(p.name.removesuffix(RELEVANCE_SUFFIX) for p in weights_folder().glob(f"*{RELEVANCE_SUFFIX}"))


@register
class Vebi(Method):
    """Models with a relevance file only (``ModelSpec.files["vebi_relevance"]``)."""

    name = NAME
    needs = Needs.MODEL_PASS
    options = VebiOptions
    outputs: ClassVar[Mapping[str, Output]] = {
        "features": Output(OutputKind.JSON, "the features shown: [{layer, channel, relevance}]", always=True)
    }
    help = "models with a VEBI relevance file: the top relevant internal features, propagated to the pixels"

    def supports(self, spec: ModelSpec) -> bool:
        return RELEVANCE in spec.files

    def requirement(self) -> str:
        shipped = ", ".join(models_with_relevance())
        return f"vebi needs the model's VEBI relevance file (whyserve vebi-fit --archive); models with one: {shipped}"

    def cost(self, request: ResolvedRequest, layer_channels: int, chunk: int) -> float:
        return 1.0 + 2.0 * (request.options.features)  # its own forward; one forward+backward per feature

    def compute(self, batch: MethodBatch) -> list[Explanation]:
        relevance = load_relevance(str(batch.spec.files[RELEVANCE]))
        model, images = batch.backend.model, batch.images[batch.rows]
        assert model is not None, "needs MODEL_PASS: only a PyTorch backend provides it"
        r = relevances(relevance, image_responses(model, relevance, images), batch.targets)
        out = []
        for k, request in enumerate(batch.requests):
            features = top_features(relevance, r[k], request.options.features)
            heatmap = feature_heatmap(model, images[k], features)
            out.append(
                Explanation(
                    method=NAME,
                    target=batch.targets[k],
                    contrast=None,
                    layer=",".join(relevance.index.layers),
                    heatmap=heatmap,
                    layer_heatmap=heatmap,
                    artifacts={"features": [f.to_json() for f in features]},
                )
            )
        return out
