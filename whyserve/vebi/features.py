"""VEBI's image descriptor x: every filter's response, over the chosen layers.

The response of filter j of layer l to an image is sum over positions of A_lj^2; the
responses of one layer are L1-normalised (so every layer weighs the same), and the layers'
vectors are concatenated into x. The chosen layers are, by default, all convolutional
layers, each read after the ReLU that follows it (the filter's rectified activation, as a
deconvnet sees it); a conv with no ReLU after it is read as is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from whyserve.errors import InvalidOption
from whyserve.layers import eval_mode, get_layer


@dataclass(frozen=True)
class FeatureIndex:
    """Where the entries of x come from: layer names and their channel counts, in order."""

    layers: tuple[str, ...]
    channels: tuple[int, ...]

    @property
    def size(self) -> int:
        return sum(self.channels)

    def locate(self, j: int) -> tuple[str, int]:
        """(layer, channel) of entry j of x."""
        for layer, count in zip(self.layers, self.channels):
            if j < count:
                return layer, j
            j -= count
        raise IndexError(j)

    def offset(self, layer: str) -> int:
        return sum(self.channels[: self.layers.index(layer)])


def conv_layers(model: nn.Module, input_size: tuple[int, int]) -> tuple[str, ...]:
    """Every Conv2d in the order it runs, each named by the ReLU that next runs after it; a conv
    is read as is where that ReLU module runs more than once per forward (torchvision's ResNet
    blocks call one ``relu`` three times), as its output would not be this conv's alone."""
    order: list[tuple[str, nn.Module]] = []
    handles = [
        m.register_forward_hook(lambda mod, _i, _o, name=n: order.append((name, mod)))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.ReLU))
    ]
    try:
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros(1, 3, *input_size, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    runs = Counter(name for name, _ in order)
    layers: list[str] = []
    for k, (name, module) in enumerate(order):
        if isinstance(module, nn.Conv2d) and runs[name] == 1:
            after = order[k + 1] if k + 1 < len(order) else None
            relu = after is not None and isinstance(after[1], nn.ReLU) and runs[after[0]] == 1
            layers.append(after[0] if relu else name)
    return tuple(dict.fromkeys(layers))


@contextmanager
def capture(model: nn.Module, layers: tuple[str, ...]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that keep each named layer's output of the next forward pass (a layer that
    runs twice in it is refused: its output would be the last call's alone)."""
    kept: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            if name in kept:
                raise InvalidOption("layers", f"{name!r} runs more than once per forward pass; name a layer that runs once")
            kept[name] = output

        return hook

    handles = [get_layer(model, name).register_forward_hook(keep(name)) for name in layers]
    try:
        yield kept
    finally:
        for handle in handles:
            handle.remove()


def responses(activations: dict[str, torch.Tensor], layers: tuple[str, ...]) -> torch.Tensor:
    """x (B, D): per layer sum over positions of A^2, L1-normalised, concatenated."""
    parts = []
    for name in layers:
        energy = activations[name].detach().float().pow(2).sum(dim=(2, 3))
        parts.append(energy / energy.sum(1, keepdim=True).clamp(min=1e-12))
    return torch.cat(parts, dim=1)


def describe(
    model: nn.Module, layers: tuple[str, ...], images: torch.Tensor, chunk: int = 64
) -> tuple[torch.Tensor, FeatureIndex]:
    """x of every image (N, D) and the index of its entries; no graph, model left as found."""
    rows = []
    channels: tuple[int, ...] = ()
    with eval_mode(model), torch.no_grad(), capture(model, layers) as kept:
        for i in range(0, len(images), chunk):
            model(images[i : i + chunk])
            rows.append(responses(kept, layers))
            channels = tuple(kept[name].shape[1] for name in layers)
            kept.clear()  # the next chunk's outputs
    return torch.cat(rows), FeatureIndex(layers, channels)
