"""Finding the target layer of a CAM method and reading its output during a forward pass."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
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
    """The last module to produce a spatial feature map (N, C, h, w) or (N, h, w, C), h*w > 1.

    A 4-D output is taken as spatial only when its (h, w) follow the input's size: the model is
    probed at ``input_size`` and 1.5 times larger, and (h, w) must grow in proportion (attention
    heads (N, heads, tokens, head_dim) and adaptive pooling do not). A model that only runs at its own size is probed
    once; (h, w) must then be a square grid whose stride divides the input. Modules that run more
    than once per forward (a shared activation, say) are skipped: their output is not one map.
    Token models (ViT) have no spatial map: the error names their token layers, which ``get_layer``
    and ``LayerCapture`` take (the patch tokens reshaped to their grid).
    """
    height, width = input_size
    first, calls, order = _output_shapes(model, (height, width))
    second: dict[str, tuple[int, ...]] | None
    try:
        second = _output_shapes(model, larger_size(input_size))[0]
    except Exception:  # noqa: BLE001 - a fixed-size model (ViT position embeddings, a flattening head)
        second = None
    # one image in, one map out: Swin's window partitions (windows, ...) are not the image's map
    ours = {name: shape for name, shape in first.items() if shape and shape[0] == 1}
    spatial = {
        name for name, shape in ours.items() if map_layout(shape, second.get(name) if second is not None else None, input_size)
    }
    tokens = [n for n in dict.fromkeys(order) if n in ours and len(ours[n]) == 3 and token_grid(ours[n][1]) and calls[n] == 1]
    for index in range(len(order) - 1, -1, -1):
        name = order[index]
        if name in spatial and calls[name] == 1:
            if not set(order[index:]) & set(tokens):
                return name
            break  # a patch embedding under a transformer: not the map to explain
    if tokens:
        modules = dict(model.named_modules())
        norms = [n for n in tokens if isinstance(modules[n], nn.LayerNorm)] or tokens
        raise InvalidOption(
            "layer",
            "a token model (no spatial map above its patch embedding): name a token layer, such as the last "
            "block's first norm (what pytorch-grad-cam's ViT recipe uses)",
            norms[-3:],
        )
    raise InvalidOption("layer", "the model has no module with a spatial (N, C, h, w) output; name one")


def _output_shapes(
    model: nn.Module, size: tuple[int, int], only: str | None = None
) -> tuple[dict[str, tuple[int, ...]], Counter[str], list[str]]:
    """Each module's output shape in one probe forward (``only``: that module's), how often it ran, and the order."""
    order: list[str] = []
    calls: Counter[str] = Counter()
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            calls[name] += 1
            order.append(name)
            shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else ()

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n and only in (None, n)]
    try:
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros(1, 3, *size, device=_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return shapes, calls, order


def is_spatial_map(shape: tuple[int, ...], larger: tuple[int, ...] | None, input_size: tuple[int, int]) -> bool:
    """Whether an output of ``shape`` at ``input_size`` (and ``larger`` at ``larger_size``; None: a
    fixed-size model) is a spatial feature map (see ``find_target_layer``)."""
    if len(shape) != 4 or shape[-1] * shape[-2] <= 1:
        return False
    (h, w), (height, width) = shape[-2:], input_size
    if larger is None:
        return h == w and height == width and height % h == 0
    if len(larger) != 4 or larger[1] != shape[1]:
        return False
    # the map keeps its stride: one pixel of rounding from padding or odd sizes
    big_height, big_width = larger_size(input_size)
    return abs(larger[2] - h * big_height / height) <= 1 and abs(larger[3] - w * big_width / width) <= 1


def map_layout(shape: tuple[int, ...], larger: tuple[int, ...] | None, input_size: tuple[int, int]) -> str | None:
    """ "nchw" or "nhwc" (timm's Swin stages, ConvNeXt's block norms) when ``shape`` is a spatial map
    in that layout (``is_spatial_map``), else None; a map that reads both ways is taken as NCHW."""
    if is_spatial_map(shape, larger, input_size):
        return "nchw"
    if len(shape) == 4 and (larger is None or len(larger) == 4):
        channels_first = (larger[0], larger[3], larger[1], larger[2]) if larger else None
        if is_spatial_map((shape[0], shape[3], shape[1], shape[2]), channels_first, input_size):
            return "nhwc"
    return None


def channels_last(model: nn.Module, name: str, input_size: tuple[int, int]) -> bool:
    """Whether layer ``name`` gives its map as (N, h, w, C), from one probe at ``input_size``: the
    layout whose (h, w) have one stride against the input. A 4-D output that is a map in neither
    layout (attention heads (N, heads, tokens, head_dim)) is refused, naming the alternatives."""
    shapes, _, _ = _output_shapes(model, input_size, only=name)
    shape = shapes.get(name, ())
    if len(shape) != 4:
        return False  # tokens, or not a map: LayerCapture names it
    height, width = input_size

    def one_stride(h: int, w: int) -> bool:
        return h * w > 1 and abs(height / h - width / w) <= 1

    if one_stride(*shape[2:]):
        return False
    if one_stride(*shape[1:3]):
        return True
    raise InvalidOption(
        "layer",
        f"{name!r} outputs {shape}, not a spatial map (N, C, h, w) or (N, h, w, C) of the input",
        _spatial_hint(dict(model.named_modules())),
    )


def larger_size(input_size: tuple[int, int]) -> tuple[int, int]:
    return round(input_size[0] * 1.5), round(input_size[1] * 1.5)


def token_grid(tokens: int) -> tuple[int, int] | None:
    """(prefix tokens, grid side) of a ViT token sequence: class/register/distillation tokens
    first (at most 8), then a square grid of patch tokens; None when ``tokens`` is not that."""
    side = int(tokens**0.5)
    prefix = tokens - side * side
    return (prefix, side) if side > 1 and prefix <= 8 else None


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

    def __init__(self, layer: nn.Module, name: str, graph: bool, channels_last: bool = False) -> None:
        self.name = name
        self.graph = graph
        self.channels_last = channels_last
        self.activations: torch.Tensor | None = None
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor | None:
        if self.activations is not None:
            raise InvalidOption("layer", f"{self.name!r} runs more than once per forward pass; name a layer that runs once")
        grid = token_grid(output.shape[1]) if isinstance(output, torch.Tensor) and output.dim() == 3 else None
        if grid is not None:
            return self._tokens(output, *grid)
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise InvalidOption("layer", f"{self.name!r} does not output an (N, C, h, w) feature map or (N, tokens, C) tokens")
        if self.channels_last:
            return self._channels_last(output)
        if not self.graph:
            self.activations = output
            return None
        torch.set_grad_enabled(True)
        self.activations = output.detach().requires_grad_(True)
        # A clone, so an in-place op above the layer cannot modify the leaf we differentiate by.
        return self.activations.clone()

    def _tokens(self, tokens: torch.Tensor, prefix: int, side: int) -> torch.Tensor | None:
        """ViT tokens (N, prefix + side², C): the patch tokens as an (N, C, side, side) map, as
        pytorch-grad-cam's ``reshape_transform`` does; the model goes on from the same tokens,
        rebuilt around the map so that gradients reach it (the prefix tokens get none)."""
        patches = tokens[:, prefix:, :].transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
        if not self.graph:
            self.activations = patches
            return None
        torch.set_grad_enabled(True)
        self.activations = patches.detach().requires_grad_(True)
        return torch.cat([tokens[:, :prefix].detach(), self.activations.flatten(2).transpose(1, 2)], dim=1)

    def _channels_last(self, output: torch.Tensor) -> torch.Tensor | None:
        """An (N, h, w, C) map explained as (N, C, h, w), as pytorch-grad-cam's Swin
        ``reshape_transform`` does; the model goes on from the same values in its own layout."""
        if not self.graph:
            self.activations = output.permute(0, 3, 1, 2)
            return None
        torch.set_grad_enabled(True)
        self.activations = output.permute(0, 3, 1, 2).detach().requires_grad_(True)
        return self.activations.permute(0, 2, 3, 1).clone()  # a clone: see _hook

    def remove(self) -> None:
        self._handle.remove()


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _spatial_hint(modules: dict[str, nn.Module]) -> list[str]:
    names = [n for n, m in modules.items() if n and isinstance(m, (nn.Conv2d, nn.Sequential))]
    return names[-10:]
