"""FGVis's defense against adversarial evidence (Wagner et al., CVPR 2019, Sec. 3.2).

While the mask is optimised, the backward pass of the class term multiplies the gradient at
every nonlinearity h by

    1[min(0, h(x)) <= h(e) <= max(0, h(x))]

where h(x) is that nonlinearity's output on the clean image and h(e) its output on the
explanation image: the optimisation may only weaken an activation towards zero, never
create or amplify one, so it cannot manufacture evidence that is not in the image.

Nonlinearities are caught at the ``torch.nn.functional`` / ``torch`` call level with a
``TorchFunctionMode``, so modules (``nn.ReLU`` calls ``F.relu``), functional calls
(``F.silu(x)``, ``x.relu_()``), in-place variants and modules called twice per forward
(torchvision ResNet's ``relu``) are all seen. Calls are keyed by their order in the
forward pass. Nothing is attached to the model: the mode is left on exit and the gates are
tensor hooks on this pass's graph only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# The elementwise activation functions; each is one top-level call (F.relu6 calls F.hardtanh
# inside, but a mode does not see calls made while it handles one).
ACTIVATIONS: frozenset[Callable[..., object]] = frozenset(
    {
        F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_,
        F.relu6, F.hardtanh, F.hardtanh_, F.leaky_relu, F.leaky_relu_, F.elu, F.elu_, F.selu, F.celu,
        F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.softplus,
        torch.sigmoid, torch.sigmoid_, torch.Tensor.sigmoid, torch.Tensor.sigmoid_, F.sigmoid,
        torch.tanh, torch.tanh_, torch.Tensor.tanh, torch.Tensor.tanh_, F.tanh,
    }
)  # fmt: skip


class RecordActivations(TorchFunctionMode):
    """Keeps every activation's output (detached), in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[torch.Tensor] = []

    def __torch_function__(
        self, func: Callable[..., object], types: object, args: tuple[object, ...] = (), kwargs: dict[str, object] | None = None
    ) -> object:
        result = func(*args, **(kwargs or {}))
        if func in ACTIVATIONS and isinstance(result, torch.Tensor):
            self.outputs.append(result.detach().clone())  # clone: an in-place op may change it later
        return result


class GateActivations(TorchFunctionMode):
    """Gates the gradient at the k-th activation call by the clean image's k-th output.

    ``clean[k]`` holds the whole batch; ``rows`` picks the rows of this pass; rows where
    ``enabled`` is False pass their gradient unchanged (the defense is off for them).
    """

    def __init__(self, clean: list[torch.Tensor], rows: torch.Tensor, enabled: torch.Tensor) -> None:
        super().__init__()
        self.clean = clean
        self.rows = rows
        self.off = ~enabled[rows]
        self.calls = 0

    def __torch_function__(
        self, func: Callable[..., object], types: object, args: tuple[object, ...] = (), kwargs: dict[str, object] | None = None
    ) -> object:
        result = func(*args, **(kwargs or {}))
        if func in ACTIVATIONS and isinstance(result, torch.Tensor):
            self._gate(result)
        return result

    def _gate(self, h_e: torch.Tensor) -> None:
        if self.calls >= len(self.clean):
            raise RuntimeError("FGVis defense: the model ran more nonlinearities than on the clean image")
        h_x = self.clean[self.calls][self.rows]
        self.calls += 1
        if not h_e.requires_grad:
            return
        with torch.no_grad():
            inside = (h_e >= h_x.clamp(max=0)) & (h_e <= h_x.clamp(min=0))
            gate = (inside | self.off.view(-1, *([1] * (h_e.dim() - 1)))).to(h_e.dtype)
        # A hook registered before any later in-place op still sees this call's output gradient.
        h_e.register_hook(lambda grad: grad * gate)  # type: ignore[no-untyped-call]

    def check_complete(self) -> None:
        if self.calls != len(self.clean):
            raise RuntimeError(
                f"FGVis defense: {self.calls} nonlinearity calls on the explanation image, {len(self.clean)} on the clean one"
            )
