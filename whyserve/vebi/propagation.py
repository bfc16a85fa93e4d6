"""Propagating one feature's activation map back to the pixels (VEBI's visual feedback).

The signal starts at a layer's output as that filter's own activation map (all other
channels zero) and goes down to the input as a vector-Jacobian product, with two changes
to the plain gradient:

- at every ReLU, the guided-backpropagation rule (Springenberg et al. 2015): the signal
  passes only where both the forward input and the signal are positive;
- at every strided module (Conv2d, MaxPool2d, AvgPool2d with stride > 1), the fix of
  Oramas et al. (ICLR 2019, Sec. 3.3) against the stride's grid artifacts: the signal is
  resized with nearest neighbour to the resolution the module would have with stride 1,
  then back-propagated through that module with stride 1.

Both are forward hooks that swap a module's output for an identical value whose backward
is the rule, so the model's code is untouched and the hooks come off afterwards. Strided
operations called as functions inside ``forward`` (not modules) are not seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from whyserve.layers import eval_mode
from whyserve.vebi.features import capture


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


class _StrideOne(torch.autograd.Function):
    """Value: the module's own output; backward: nearest resize, then the stride-1 op's VJP."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, output: torch.Tensor, stride_one: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.stride_one = stride_one
        return output.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            dense = ctx.stride_one(leaf)
            resized = F.interpolate(grad, size=dense.shape[-2:], mode="nearest")
            (gx,) = torch.autograd.grad(dense, leaf, resized)
        return gx, None, None


def _stride_one(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The module's operation with stride 1, or None if the module is not strided."""
    stride = getattr(module, "stride", 1)
    if all(s == 1 for s in (stride if isinstance(stride, tuple) else (stride,))):
        return None
    m = module
    if isinstance(m, nn.Conv2d):
        return lambda t: F.conv2d(t, m.weight, None, 1, m.padding, m.dilation, m.groups)
    if isinstance(m, nn.MaxPool2d):
        return lambda t: F.max_pool2d(t, m.kernel_size, 1, m.padding, m.dilation, m.ceil_mode)
    if isinstance(m, nn.AvgPool2d):
        return lambda t: F.avg_pool2d(t, m.kernel_size, 1, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override)
    return None


@contextmanager
def guided_rules(model: nn.Module, strided_fix: bool = True) -> Iterator[None]:
    """Guided ReLUs (and, with ``strided_fix``, the stride-1 backward) while inside."""
    handles = []
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            handles.append(module.register_forward_hook(lambda _m, inputs, _o: _GuidedReLU.apply(inputs[0])))
        elif strided_fix and (op := _stride_one(module)) is not None:
            handles.append(
                module.register_forward_hook(lambda _m, inputs, out, op=op: _StrideOne.apply(inputs[0], out.detach(), op))
            )
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def propagate(model: nn.Module, image: torch.Tensor, features: list[tuple[str, int]], strided_fix: bool = True) -> torch.Tensor:
    """(k, C, H, W): each feature's (layer, channel) activation map on ``image`` (C, H, W)
    propagated alone to the input. One forward and one backward for all k features."""
    k = len(features)
    layers = tuple(dict.fromkeys(layer for layer, _ in features))
    x = image.detach().clone()[None].repeat(k, 1, 1, 1).requires_grad_(True)
    with torch.inference_mode(False), eval_mode(model), torch.enable_grad():
        with guided_rules(model, strided_fix), capture(model, layers) as kept:  # capture after the rules: sees their output
            model(x)
        outputs, signals = [], []
        for layer in layers:
            activation = kept[layer]
            signal = torch.zeros_like(activation)
            for row, (name, channel) in enumerate(features):
                if name == layer:
                    signal[row, channel] = activation[row, channel].detach()
            outputs.append(activation)
            signals.append(signal)
        (grad,) = torch.autograd.grad(outputs, x, signals)
    return grad.detach()


def saliency(grad: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) -> (..., H, W): max |signal| over the colour channels (Simonyan et al. 2014)."""
    return grad.abs().amax(dim=-3)
