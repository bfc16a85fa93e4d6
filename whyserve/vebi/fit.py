"""Fitting VEBI's relevant features (``whyserve vebi-fit MODEL``) and the relevance file.

On generated training flowers (a seed no evaluation uses), x of every image
(``whyserve.vebi.features``); per class c, w_c = argmin ||X^T w - l_c||^2 subject to
||w_c||_1 <= mu (``whyserve.vebi.solver``), l_c the 0/1 indicator of class c. The relevant
features of c are its non-zero weights. Deterministic: the images depend only on the seed,
the solver has no randomness.

The relevance file (JSON, ``<model>.vebi.json`` beside the model's weights) holds the layers
and their channel counts, mu, the data it was fitted on, and per class the non-zero weights
as (layer, channel, weight).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from whyserve.models import ModelSpec
from whyserve.shipped import RELEVANCE_SUFFIX, weights_folder
from whyserve.vebi.features import FeatureIndex, conv_layers, describe
from whyserve.vebi.solver import l1_ball_least_squares

FIT_SEED = 11  # training flowers of VEBI's fitting; the flowers models trained on 1 and 2, eval uses 100+
ZERO = 1e-6  # |w| below this (relative to mu) counts as zero


@dataclass
class Relevance:
    """The fitted weights of one model: ``weights`` (classes, D) over the entries of x."""

    model: str
    index: FeatureIndex
    weights: torch.Tensor
    mu: float
    meta: dict

    def relevant(self, c: int) -> list[tuple[str, int, float]]:
        """(layer, channel, weight) of class c's non-zero weights, largest |weight| first."""
        w = self.weights[c]
        nonzero = torch.nonzero(w.abs() > ZERO * self.mu).flatten().tolist()
        nonzero.sort(key=lambda j: -abs(float(w[j])))
        return [(*self.index.locate(j), float(w[j])) for j in nonzero]

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "method": "vebi",
            "layers": list(self.index.layers),
            "channels": list(self.index.channels),
            "mu": self.mu,
            **self.meta,
            "classes": [
                [{"layer": layer, "channel": ch, "weight": round(w, 8)} for layer, ch, w in self.relevant(c)]
                for c in range(self.weights.shape[0])
            ],
        }

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Relevance:
        data = json.loads(Path(path).read_text())
        index = FeatureIndex(tuple(data["layers"]), tuple(int(c) for c in data["channels"]))
        weights = torch.zeros(len(data["classes"]), index.size, dtype=torch.float64)
        for c, features in enumerate(data["classes"]):
            for f in features:
                if f["layer"] not in index.layers or not 0 <= f["channel"] < index.channels[index.layers.index(f["layer"])]:
                    raise ValueError(f"{path}: class {c} names {f['layer']}:{f['channel']}, not in its layers")
                weights[c, index.offset(f["layer"]) + f["channel"]] = float(f["weight"])
        meta = {k: v for k, v in data.items() if k not in ("model", "method", "layers", "channels", "mu", "classes")}
        return cls(data["model"], index, weights, float(data["mu"]), meta)


def fit(
    spec: ModelSpec,
    images: torch.Tensor,
    labels: torch.Tensor,
    mu: float,
    layers: tuple[str, ...] | None = None,
    iterations: int = 3000,
) -> Relevance:
    """Fit w_c for every class of ``spec`` on ``images`` (N, C, H, W) with ``labels`` (N,)."""
    layers = layers or conv_layers(spec.module, spec.input_size)
    x, index = describe(spec.module, layers, images)
    classes = len(spec.class_names) if spec.class_names else int(labels.max()) + 1
    targets = torch.nn.functional.one_hot(labels, classes).double()
    weights = l1_ball_least_squares(x.T.double(), targets, mu, iterations).T.contiguous()
    fitted = (x.double() @ weights.T).argmax(1)
    meta = {
        "images": len(images),
        "iterations": iterations,
        "train_accuracy_of_fit": round(float((fitted == labels).double().mean()), 4),
    }
    weights[weights.abs() <= ZERO * mu] = 0.0
    return Relevance(spec.name, index, weights, float(mu), meta)


def relevance_path(model: str) -> Path:
    """Where a shipped model's relevance file lives."""
    return weights_folder() / f"{model}{RELEVANCE_SUFFIX}"


def summary(relevance: Relevance, class_names: tuple[str, ...] | None) -> str:
    lines = []
    for c in range(relevance.weights.shape[0]):
        name = class_names[c] if class_names else str(c)
        features = relevance.relevant(c)
        shown = ", ".join(f"{layer}:{ch} ({w:+.2f})" for layer, ch, w in features[:6])
        lines.append(f"  {c} {name}: {len(features)} features: {shown}{' ...' if len(features) > 6 else ''}")
    return "\n".join(lines)


def overlap(relevance: Relevance) -> np.ndarray:
    """Jaccard overlap of the classes' relevant (non-zero) feature sets, (C, C)."""
    sets = [set((layer, ch) for layer, ch, _ in relevance.relevant(c)) for c in range(relevance.weights.shape[0])]
    return np.array([[len(a & b) / max(len(a | b), 1) for b in sets] for a in sets])
