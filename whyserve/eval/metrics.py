"""Quality metrics of saliency maps: localisation against ground truth, and faithfulness.

Localisation (need a ground-truth mask, ``whyserve.data.flowers``):

- ``energy_pointing_game`` (Score-CAM paper, Wang et al. 2020): the share of the map's
  positive energy inside the mask, sum(S+ in mask) / sum(S+). 0 when the map has no energy.
- ``pointing_game`` (Zhang et al. 2016): 1 if the map's maximum lies in the mask (within
  ``tolerance`` pixels), else 0. Ties: the first maximum in row-major order.
- ``grid_pointing_game`` (B-cos, Böhle et al. 2022): for a 2x2 grid of images of different
  classes, the share of the positive attribution for one cell's class that falls in that cell.

Faithfulness (need the model; ``predict`` maps a batch (N, C, H, W) to class probabilities):

- ``deletion_auc`` / ``insertion_auc`` (RISE, Petsiuk et al. 2018): pixels are removed from
  the image (replaced by ``baseline``), or inserted into the baseline, in order of decreasing
  saliency, ``steps`` equal chunks; the target probability after each step, area under the
  curve over the fraction of pixels [0, 1] (trapezoid rule). Deletion: lower is better;
  insertion: higher is better.
- ``average_drop`` / ``increase_in_confidence`` (Grad-CAM++, Chattopadhyay et al. 2018, as
  the Score-CAM paper uses them): with Y the target probability on the image and O on the
  image multiplied by the map (the model's input times S in [0, 1]),
  Average Drop = mean(max(0, Y - O) / Y) x 100 (lower is better),
  Increase in Confidence = mean(1[O > Y]) x 100 (higher is better).
  ``confidence_change`` gives one image's (drop, increase); optionally the masked image is
  blended toward a baseline (S * image + (1 - S) * baseline) instead of black.

Uncertainty: ``bootstrap_interval`` gives the 95 % percentile bootstrap interval of a mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

Predict = Callable[[torch.Tensor], torch.Tensor]


def energy_pointing_game(saliency: np.ndarray, mask: np.ndarray) -> float:
    positive = np.clip(np.asarray(saliency, dtype=np.float64), 0, None)
    total = positive.sum()
    return float(positive[np.asarray(mask, dtype=bool)].sum() / total) if total > 0 else 0.0


def pointing_game(saliency: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> float:
    saliency = np.asarray(saliency)
    mask = np.asarray(mask, dtype=bool)
    r, c = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    if tolerance <= 0:
        return float(mask[r, c])
    rows, cols = np.ogrid[: mask.shape[0], : mask.shape[1]]
    near = (rows - r) ** 2 + (cols - c) ** 2 <= tolerance**2
    return float((mask & near).any())


def grid_pointing_game(saliency: np.ndarray, cell: int, grid: int = 2) -> float:
    """Share of positive attribution in ``cell`` (row-major) of a ``grid`` x ``grid`` image."""
    saliency = np.asarray(saliency)
    h, w = saliency.shape[0] // grid, saliency.shape[1] // grid
    mask = np.zeros(saliency.shape, dtype=bool)
    r, c = divmod(cell, grid)
    mask[r * h : (r + 1) * h, c * w : (c + 1) * w] = True
    return energy_pointing_game(saliency, mask)


def _order(saliency: np.ndarray) -> torch.Tensor:
    # decreasing saliency; a stable sort so equal values keep row-major order
    flat = torch.as_tensor(np.asarray(saliency, dtype=np.float64)).flatten()
    return torch.sort(flat, descending=True, stable=True).indices


def _curve(
    predict: Predict, start: torch.Tensor, end: torch.Tensor, saliency: np.ndarray, target: int, steps: int, chunk: int
) -> np.ndarray:
    """Target probability as pixels go from ``start`` to ``end`` in saliency order."""
    _, h, w = start.shape
    rank = torch.empty(h * w, dtype=torch.long)
    rank[_order(saliency)] = torch.arange(h * w)  # each pixel's place in the order
    counts = torch.tensor([round(k * h * w / steps) for k in range(steps + 1)])
    keep = (rank[None] < counts[:, None]).view(-1, 1, h, w)  # step k: the first counts[k] pixels
    images = torch.where(keep, end, start)
    probs = []
    for i in range(0, len(images), chunk):
        with torch.no_grad():
            probs.append(predict(images[i : i + chunk])[:, target].float().cpu())
    return torch.cat(probs).numpy()


def auc(curve: np.ndarray) -> float:
    """Trapezoid area of a curve sampled at equal steps over [0, 1]."""
    curve = np.asarray(curve, dtype=np.float64)
    n = len(curve) - 1
    return float((curve.sum() - (curve[0] + curve[-1]) / 2) / n)


def deletion_auc(
    predict: Predict,
    image: torch.Tensor,
    saliency: np.ndarray,
    target: int,
    baseline: torch.Tensor | None = None,
    steps: int = 32,
    chunk: int = 33,
) -> float:
    """Image (C, H, W) in the model's input space; ``baseline`` defaults to zeros."""
    baseline = torch.zeros_like(image) if baseline is None else baseline
    return auc(_curve(predict, image, baseline, saliency, target, steps, chunk))


def insertion_auc(
    predict: Predict,
    image: torch.Tensor,
    saliency: np.ndarray,
    target: int,
    baseline: torch.Tensor | None = None,
    steps: int = 32,
    chunk: int = 33,
) -> float:
    """``baseline`` defaults to the image blurred (Gaussian, sigma = 1/20 of its width), as RISE."""
    baseline = blurred(image) if baseline is None else baseline
    return auc(_curve(predict, baseline, image, saliency, target, steps, chunk))


def blurred(image: torch.Tensor) -> torch.Tensor:
    sigma = max(image.shape[-1] / 20, 1.0)
    kernel = 2 * int(3 * sigma) + 1
    return TF.gaussian_blur(image[None], [kernel, kernel], [sigma, sigma])[0]


def confidence_change(
    predict: Predict, image: torch.Tensor, saliency: np.ndarray, target: int, baseline: torch.Tensor | None = None
) -> tuple[float, float]:
    """(drop, increase) of one image: max(0, Y - O) / Y and 1[O > Y] (not yet x 100).

    O is scored on S * image + (1 - S) * baseline; the default baseline (zeros) is the papers'
    image * S. A non-informative baseline (``blurred(image)``, the dataset mean) asks whether
    the map keeps the evidence without showing the model an input it never saw (black)."""
    return confidence_changes(predict, image, saliency, target, [baseline])[0]


def confidence_changes(
    predict: Predict, image: torch.Tensor, saliency: np.ndarray, target: int, baselines: Sequence[torch.Tensor | None]
) -> list[tuple[float, float]]:
    """``confidence_change`` for each baseline (None: black), in one batch: Y is scored once."""
    s = torch.as_tensor(np.asarray(saliency, dtype=np.float32))[None]
    masked = [image * s if baseline is None else image * s + baseline * (1 - s) for baseline in baselines]
    with torch.no_grad():
        probs = predict(torch.stack([image, *masked]))[:, target].float().tolist()
    y = probs[0]
    return [(max(0.0, y - o) / y if y > 0 else 0.0, float(o > y)) for o in probs[1:]]


def average_drop(changes: list[tuple[float, float]]) -> float:
    return 100.0 * float(np.mean([d for d, _ in changes])) if changes else float("nan")


def increase_in_confidence(changes: list[tuple[float, float]]) -> float:
    return 100.0 * float(np.mean([i for _, i in changes])) if changes else float("nan")


def bootstrap_interval(values: list[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of ``values`` (resampled with replacement)."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2:
        return (float(data.mean()), float(data.mean())) if len(data) else (float("nan"), float("nan"))
    picks = np.random.default_rng(seed).integers(0, len(data), size=(resamples, len(data)))
    means = data[picks].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
