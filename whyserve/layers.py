"""Finding the target layer of a CAM method and reading its output during a forward pass."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from whyserve.errors import InvalidOption


def get_layer(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if not name or name not in modules:
        raise InvalidOption("layer", f"no module named {name!r} in the model", _spatial_hint(modules))
    return modules[name]


def find_target_layer(model: nn.Module, input_size: tuple[int, int]) -> str:
    """The last module to produce a spatial feature map (N, C, h, w), h*w > 1.

    Modules that run more than once per forward (a shared activation, say) are skipped:
    their output is not one feature map.
    """
    order: list[str] = []
    calls: Counter[str] = Counter()
    spatial: set[str] = set()

    def hook(name: str):
        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            calls[name] += 1
            order.append(name)
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
                spatial.add(name)

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros(1, 3, *input_size, device=_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    for name in reversed(order):
        if name in spatial and calls[name] == 1:
            return name
    raise InvalidOption("layer", "the model has no module with a spatial (N, C, h, w) output; name one")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode and give every module back its own train/eval flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


class LayerCapture:
    """Forward hook that keeps a layer's output; with ``graph=True`` autograd starts there.

    The forward runs under ``no_grad``; when the target layer has produced its output the
    hook turns grad mode on, so only the layers above it record a graph. The enclosing
    ``no_grad`` restores the caller's grad mode on exit.
    """

    def __init__(self, layer: nn.Module, name: str, graph: bool) -> None:
        self.name = name
        self.graph = graph
        self.activations: torch.Tensor | None = None
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor | None:
        if self.activations is not None:
            raise InvalidOption("layer", f"{self.name!r} runs more than once per forward pass; name a layer that runs once")
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise InvalidOption("layer", f"{self.name!r} does not output an (N, C, h, w) feature map")
        if not self.graph:
            self.activations = output
            return None
        torch.set_grad_enabled(True)
        self.activations = output.detach().requires_grad_(True)
        # A clone, so an in-place op above the layer cannot modify the leaf we differentiate by.
        return self.activations.clone()

    def remove(self) -> None:
        self._handle.remove()


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _spatial_hint(modules: dict[str, nn.Module]) -> list[str]:
    names = [n for n, m in modules.items() if n and isinstance(m, (nn.Conv2d, nn.Sequential))]
    return names[-10:]
