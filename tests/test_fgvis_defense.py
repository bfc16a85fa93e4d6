"""FGVis's gradient-filter defense (whyserve.methods.fgvis_defense): the backward pass is the
paper's rule, and every nonlinearity call of the served architectures is caught."""

from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from whyserve import load_model
from whyserve.methods.fgvis import FGVisOptions, optimise
from whyserve.methods.fgvis_defense import GateActivations, RecordActivations

pytestmark = pytest.mark.usefixtures("one_thread")


class TwoLayer(nn.Module):
    """y = W3 tanh(W2 relu(W1 x + b1) + b2): two nonlinearities, one of them signed."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2, self.l3 = nn.Linear(6, 8), nn.Linear(8, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.l3(torch.tanh(self.l2(F.relu(self.l1(x)))))


def _inside(h_e, h_x):
    return ((h_e >= torch.minimum(h_x, torch.zeros_like(h_x))) & (h_e <= torch.maximum(h_x, torch.zeros_like(h_x)))).float()


def test_backward_is_the_papers_rule_on_a_two_layer_net():
    net = TwoLayer()
    torch.manual_seed(1)
    x, e = torch.randn(4, 6), torch.randn(4, 6, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0])
    recorder = RecordActivations()
    with torch.no_grad(), recorder:
        net(x)
    assert len(recorder.outputs) == 2
    gate = GateActivations(recorder.outputs, torch.arange(4), torch.tensor([True, True, True, False]))
    with gate:
        y = net(e)
    gate.check_complete()
    (got,) = torch.autograd.grad(y.gather(1, target[:, None]).sum(), e)

    # The rule by hand: dy/de = W1^T (g1 * relu'(z1) * (W2^T (g2 * tanh'(z2) * W3[c]))).
    with torch.no_grad():
        z1x = net.l1(x)
        h1x = F.relu(z1x)
        h2x = torch.tanh(net.l2(h1x))
        z1 = net.l1(e)
        h1 = F.relu(z1)
        h2 = torch.tanh(net.l2(h1))
        g1, g2 = _inside(h1, h1x), _inside(h2, h2x)
        g1[3], g2[3] = 1, 1  # row 3: defense off
        d2 = g2 * (1 - h2**2) * net.l3.weight[target]
        d1 = g1 * (z1 > 0).float() * (d2 @ net.l2.weight)
        expected = d1 @ net.l1.weight
    (plain,) = torch.autograd.grad(net(e).gather(1, target[:, None]).sum(), e)
    torch.testing.assert_close(got, expected)
    assert (g1[:3] == 0).any() and (g2[:3] == 0).any()  # the rule did cut something
    assert not torch.allclose(got[:3], plain[:3])
    torch.testing.assert_close(got[3], plain[3])  # the row without defense is plain autograd


class Functional(nn.Module):
    """Functional and in-place activations, and one module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.silu(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.act(self.conv3(x))  # the same module again
        x = F.hardswish(x).relu_() * torch.sigmoid(x) + F.relu6(x) + F.gelu(x)
        return self.fc(x.mean(dim=(2, 3)))


class CountAten(TorchDispatchMode):
    """An independent count: the activation kernels that really ran (aten level)."""

    NAMES: ClassVar[set[str]] = {
        "relu",
        "relu6",
        "hardtanh",
        "mish",
        "softplus",
        "silu",
        "sigmoid",
        "hardswish",
        "hardsigmoid",
        "gelu",
        "tanh",
        "elu",
        "leaky_relu",
    }

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__.rstrip("_") in self.NAMES:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "name, size, expected",
    [("flowers_cnn", 96, 4), ("resnet18", 64, 17), ("efficientnet_lite0", 224, None), ("functional", 16, 8)],
)
def test_every_nonlinearity_call_is_caught(name, size, expected):
    model = Functional().eval() if name == "functional" else load_model(name).module
    x = torch.randn(2, 3, size, size)
    recorder, aten = RecordActivations(), CountAten()
    with torch.no_grad():
        with recorder:
            model(x)
        with aten:
            model(x)
    assert len(recorder.outputs) == aten.count > 0
    if expected is not None:
        assert len(recorder.outputs) == expected
    if name == "efficientnet_lite0":  # every ReLU6 module call (the stem's is shared with nothing else)
        calls = []
        hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in model.modules() if isinstance(m, nn.ReLU6)]
        with torch.no_grad():
            model(x)
        for h in hooks:
            h.remove()
        assert len(recorder.outputs) == len(calls)
    # and the gated pass meets exactly as many, each gating a gradient of its shape
    e = x.clone().requires_grad_(True)
    gate = GateActivations(recorder.outputs, torch.arange(2), torch.tensor([True, True]))
    with gate:
        y = model(e)
    gate.check_complete()
    torch.autograd.grad(y[:, 0].sum(), e)


def test_the_defense_changes_the_optimisation_and_leaves_no_trace():
    spec = load_model("flowers_cnn")
    torch.manual_seed(0)
    images = torch.rand(2, 3, 96, 96)
    model = spec.module
    hooks_before = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]
    black = torch.zeros(3, 96, 96)
    on = optimise(model, images, [1, 5], [FGVisOptions(game="preservation", iterations=30, lam=2e-3)] * 2, black)
    off = optimise(model, images, [1, 5], [FGVisOptions(game="preservation", iterations=30, lam=2e-3, defense=False)] * 2, black)
    assert not torch.allclose(on.masks, off.masks)
    hooks_after = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]
    assert hooks_after == hooks_before
    assert torch._C._len_torch_function_stack() == 0
    assert all(p.requires_grad for p in model.parameters())
    assert torch.is_grad_enabled()
