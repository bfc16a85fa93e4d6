"""The interpretation figure of ``vebi-fit``: what each class's relevant features stand for.

One row per class, one column group per relevant feature (positive weight, largest first,
at most ``per_class``): the training crops where the feature fires most (centred on its
strongest position) and its average visualisation, the mean of its propagated signal
(``whyserve.vebi.propagation``) over those images, cropped the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from whyserve.vebi.features import capture
from whyserve.vebi.fit import Relevance
from whyserve.vebi.propagation import propagate

CROP = 40  # pixels of the 96 x 96 input


def _crop(image: np.ndarray, centre: tuple[int, int]) -> np.ndarray:
    h, w = image.shape[:2]
    top = int(np.clip(centre[0] - CROP // 2, 0, h - CROP))
    left = int(np.clip(centre[1] - CROP // 2, 0, w - CROP))
    return image[top : top + CROP, left : left + CROP]


def feature_panels(
    model: torch.nn.Module, images: torch.Tensor, layer: str, channel: int, top: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """The ``top`` crops where (layer, channel) fires most, and its average visualisation."""
    with torch.no_grad(), capture(model, (layer,)) as kept:
        model(images)
        maps = kept[layer][:, channel]
    strongest = maps.flatten(1).amax(1).topk(top).indices.tolist()
    crops, signals = [], []
    for i in strongest:
        r, c = divmod(int(maps[i].argmax()), maps.shape[-1])
        scale = images.shape[-1] / maps.shape[-1]
        centre = (int((r + 0.5) * scale), int((c + 0.5) * scale))
        picture = images[i].permute(1, 2, 0).numpy()
        signal = propagate(model, images[i], [(layer, channel)])[0].permute(1, 2, 0).numpy()
        signal = (signal - signal.min()) / max(float(signal.max() - signal.min()), 1e-12)
        crops.append(_crop(picture, centre))
        signals.append(_crop(signal, centre))
    return crops, np.mean(signals, axis=0)


def write(
    path: Path, model: torch.nn.Module, relevance: Relevance, images: torch.Tensor, class_names, per_class: int = 3, top: int = 4
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = relevance.weights.shape[0]
    columns = per_class * (top + 1)
    fig, axes = plt.subplots(classes, columns, figsize=(0.9 * columns, 1.05 * classes), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for c in range(classes):
        positive = [(layer, ch, w) for layer, ch, w in relevance.relevant(c) if w > 0][:per_class]
        axes[c][0].set_title(class_names[c] if class_names else str(c), fontsize=6, loc="left")
        for k, (layer, channel, weight) in enumerate(positive):
            crops, average = feature_panels(model, images, layer, channel, top)
            for m, panel in enumerate([*crops, average]):
                axes[c][k * (top + 1) + m].imshow(np.clip(panel, 0, 1))
            axes[c][k * (top + 1) + top].set_title(f"{layer}:{channel}\nw={weight:.2f}", fontsize=5)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
