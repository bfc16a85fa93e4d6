"""``whyserve eval-vebi``: VEBI against the methods of its paper on the flowers' ground truth.

For both flowers variants (``flowers_cnn``: the class is the colours of three parts, the
discriminative mask is petals + centre + leaves; ``flowers_part``: the class is the colour
of one part, the mask is that part), on generated flowers of seed ``seed`` (balanced
classes), each method explains the true class:

- ``vebi``: the shipped relevance file, top 3 features;
- ``upsampled activations``: the same 3 features, their activation maps upsampled
  (bilinear) instead of propagated (the paper's "upsampled activation maps");
- ``guided backprop`` and ``deconvnet``: Captum's GuidedBackprop / Deconvolution of the
  target logit, max |attribution| over colour channels, min-max normalised;
- ``gradcam``, ``scorecam``: the engine's; on ``flowers_bcos`` (same classes as
  ``flowers_cnn``), ``bcos``. No B-cos model of the single-part variant exists.

Metrics: IoU of the heatmap thresholded at t = 0.05, 0.10, ..., 0.95 with the mask (mean
over thresholds, and the best threshold's mean over images), energy pointing game.
Interpretation checks of the relevance file: class-specificity (Jaccard overlap of two
classes' relevant feature sets) and ablation (each class's accuracy when its relevant
channels are zeroed vs as many random channels of the same layers).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from whyserve.data.flowers import balanced_labels, generate, generate_single_part
from whyserve.engine import Explainer, ExplainRequest
from whyserve.eval import metrics
from whyserve.layers import get_layer
from whyserve.methods import vebi
from whyserve.models import ModelSpec, load_model
from whyserve.vebi.fit import Relevance, overlap, relevance_path
from whyserve.vebi.propagation import saliency

THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)
DATA = {"flowers_cnn": generate, "flowers_part": generate_single_part}
BCOS_FOR = {"flowers_cnn": "flowers_bcos"}  # a B-cos model of the same classes


@dataclass
class Scores:
    iou: list[np.ndarray] = field(default_factory=list)  # per image: IoU at every threshold
    energy: list[float] = field(default_factory=list)

    def row(self) -> tuple[float, float, float, float]:
        curves = np.stack(self.iou).mean(0)
        best = int(curves.argmax())
        return float(curves.mean()), float(curves[best]), float(THRESHOLDS[best]), float(np.mean(self.energy))


@dataclass
class VebiReport:
    scores: dict[str, dict[str, Scores]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(Scores)))
    specificity: dict[str, tuple[float, float]] = field(default_factory=dict)
    ablation: dict[str, list[tuple[float, float, float, int]]] = field(default_factory=lambda: defaultdict(list))
    n: dict[str, int] = field(default_factory=dict)

    def markdown(self) -> str:
        lines = []
        for model, methods in self.scores.items():
            lines += [f"**{model}** (n = {self.n[model]} images)", ""]
            lines += ["| method | IoU, mean over t | IoU at best t | best t | energy PG |", "|---|---|---|---|---|"]
            for method, s in methods.items():
                mean, best, t, energy = s.row()
                lines.append(f"| {method} | {mean:.3f} | {best:.3f} | {t:.2f} | {energy:.3f} |")
            lines.append("")
        lines += ["| model | mean Jaccard overlap of two classes' relevant sets | max |", "|---|---|---|"]
        lines += [f"| {m} | {a:.3f} | {b:.3f} |" for m, (a, b) in self.specificity.items()]
        lines += [
            "",
            "| model | class accuracy | relevant channels zeroed | as many random channels zeroed | channels |",
            "|---|---|---|---|---|",
        ]
        for model, rows in self.ablation.items():
            base, rel, rand, k = (np.mean([r[i] for r in rows]) for i in range(4))
            lines.append(f"| {model} (mean of {len(rows)} classes) | {base:.1%} | {rel:.1%} | {rand:.1%} | {k:.1f} |")
        return "\n".join(lines)


def iou_curve(heatmap: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    above = heatmap[None] > THRESHOLDS[:, None, None]
    union = (above | mask).sum((1, 2))
    return np.where(union > 0, (above & mask).sum((1, 2)) / np.maximum(union, 1), 0.0)


def _minmax(maps: torch.Tensor) -> np.ndarray:
    return vebi.minmax(maps).float().cpu().numpy()


def captum_maps(spec: ModelSpec, images: torch.Tensor, targets: list[int], kind: str) -> np.ndarray:
    """Captum's GuidedBackprop or Deconvolution of the target logits, as (N, H, W) maps."""
    from captum.attr import Deconvolution, GuidedBackprop

    method = {"guided backprop": GuidedBackprop, "deconvnet": Deconvolution}[kind](spec.module)
    with torch.inference_mode(False), torch.enable_grad():
        attributions = method.attribute(images.clone().requires_grad_(True), target=targets)
    return _minmax(saliency(attributions.detach()))


def upsampled_activation_maps(
    spec: ModelSpec, relevance: Relevance, image: torch.Tensor, features: list[vebi.Feature]
) -> np.ndarray:
    """The same features' activation maps, bilinearly upsampled, min-max, pixel-wise max."""
    if not features:
        return np.zeros(image.shape[-2:], dtype=np.float32)
    from whyserve.vebi.features import capture

    with torch.no_grad(), capture(spec.module, relevance.index.layers) as kept:
        spec.module(image[None])
        size = tuple(image.shape[-2:])
        up = [
            F.interpolate(kept[f.layer][:1, f.channel : f.channel + 1], size=size, mode="bilinear", align_corners=False)[0, 0]
            for f in features
        ]
    return _minmax(torch.stack(up)).max(0)


def _score(report: VebiReport, model: str, method: str, flowers, maps) -> None:
    for f, heatmap in zip(flowers, maps):
        report.scores[model][method].iou.append(iou_curve(heatmap, f.evidence_mask))
        report.scores[model][method].energy.append(metrics.energy_pointing_game(heatmap, f.evidence_mask))


def _engine_maps(spec: ModelSpec, images: torch.Tensor, targets: list[int], method: str) -> list[np.ndarray]:
    explainer = Explainer(spec)
    out = []
    for i in range(0, len(targets), 16):
        result = explainer.explain(images[i : i + 16], [ExplainRequest(method, target=t) for t in targets[i : i + 16]])
        out += [e.heatmap for e in result.explanations]
    return out


def ablation(spec: ModelSpec, relevance: Relevance, images: torch.Tensor, labels: torch.Tensor, draws: int = 5):
    """Per class: (accuracy, with its relevant channels zeroed, with as many random ones of the same layers, count)."""
    rng = np.random.default_rng(0)
    rows = []
    for c in range(relevance.weights.shape[0]):
        own = labels == c
        chosen = [(layer, ch) for layer, ch, _ in relevance.relevant(c)]
        accuracy = _accuracy(spec, images[own], c, [])
        relevant = _accuracy(spec, images[own], c, chosen)
        randoms = []
        for _ in range(draws):
            drawn = []
            for layer in dict.fromkeys(layer for layer, _ in chosen):
                count = sum(1 for name, _ in chosen if name == layer)
                size = relevance.index.channels[relevance.index.layers.index(layer)]
                drawn += [(layer, int(ch)) for ch in rng.choice(size, count, replace=False)]
            randoms.append(_accuracy(spec, images[own], c, drawn))
        rows.append((accuracy, relevant, float(np.mean(randoms)), len(chosen)))
    return rows


def _accuracy(spec: ModelSpec, images: torch.Tensor, label: int, zeroed: list[tuple[str, int]]) -> float:
    handles = []
    for layer in dict.fromkeys(name for name, _ in zeroed):
        channels = [ch for name, ch in zeroed if name == layer]

        def zero(_m, _i, output, channels=channels):
            output = output.clone()
            output[:, channels] = 0
            return output

        handles.append(get_layer(spec.module, layer).register_forward_hook(zero))
    try:
        with torch.no_grad():
            return float((spec.module(images).argmax(1) == label).float().mean())
    finally:
        for handle in handles:
            handle.remove()


def _tensor(flowers) -> torch.Tensor:
    return torch.stack([torch.from_numpy(f.image).permute(2, 0, 1).float() / 255.0 for f in flowers])


def run(n_images: int = 48, n_ablation: int = 240, seed: int = 100, progress: bool = True) -> VebiReport:
    report = VebiReport()
    bar = tqdm(total=2 * 7, desc="whyserve eval-vebi", unit="method", file=sys.stderr, disable=not progress)
    for model, generator in DATA.items():
        spec = load_model(model)
        relevance = Relevance.load(relevance_path(model))
        classes = len(spec.class_names)
        flowers = generator(n_images, seed, labels=balanced_labels(n_images, classes))
        images, targets = _tensor(flowers), [f.label for f in flowers]
        report.n[model] = n_images
        explained = vebi.explain(spec.module, relevance, images, targets)
        _score(report, model, "vebi", flowers, [h for h, _ in explained])
        ups = [upsampled_activation_maps(spec, relevance, im, feats) for im, (_, feats) in zip(images, explained)]
        _score(report, model, "upsampled activations (same features)", flowers, ups)
        bar.update(2)
        for kind in ("guided backprop", "deconvnet"):
            _score(report, model, kind, flowers, captum_maps(spec, images, targets, kind))
            bar.update()
        for method in ("gradcam", "scorecam"):
            _score(report, model, method, flowers, _engine_maps(spec, images, targets, method))
            bar.update()
        if model in BCOS_FOR:
            _score(
                report,
                model,
                f"bcos ({BCOS_FOR[model]})",
                flowers,
                _engine_maps(load_model(BCOS_FOR[model]), images, targets, "bcos"),
            )
        bar.update()
        jaccard = overlap(relevance)
        off = jaccard[~np.eye(len(jaccard), dtype=bool)]
        report.specificity[model] = (float(off.mean()), float(off.max()))
        held = generator(n_ablation, seed + 7, labels=balanced_labels(n_ablation, classes))
        report.ablation[model] = ablation(spec, relevance, _tensor(held), torch.tensor([f.label for f in held]))
    bar.close()
    return report
