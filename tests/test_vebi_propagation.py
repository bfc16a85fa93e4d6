"""VEBI's propagation of one feature to the pixels (whyserve.vebi.propagation): guided
backpropagation, pinned to Captum's GuidedBackprop, and the stride fix against grid artifacts."""

from __future__ import annotations

import torch
from captum.attr import GuidedBackprop
from torch import nn

from whyserve.vebi.propagation import propagate, saliency


def _net(stride: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=stride, padding=1), nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=stride, padding=1), nn.ReLU(),
        nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(),
    ).eval()  # fmt: skip


class _ChannelObjective(nn.Module):
    """sum(A_L * v) with v = that channel's own activation map: its gradient at layer L is
    exactly the signal VEBI starts from, so Captum's guided backprop of it is the reference."""

    def __init__(self, net: nn.Sequential, upto: int, channel: int) -> None:
        super().__init__()
        self.net, self.upto, self.channel = net, upto, channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.net[: self.upto + 1](x)
        v = torch.zeros_like(a)
        v[:, self.channel] = a[:, self.channel].detach()
        return (a * v).sum(dim=(1, 2, 3))


def test_equals_captum_guided_backprop_on_a_stride_1_network():
    net = _net(stride=1)
    image = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(1))
    features = [("1", 2), ("3", 5), ("5", 0)]  # ReLUs of conv 1, 2, 3
    ours = propagate(net, image, features)
    for row, (layer, channel) in enumerate(features):
        reference = GuidedBackprop(_ChannelObjective(net, int(layer), channel)).attribute(image[None].clone())
        assert reference.abs().max() > 0
        torch.testing.assert_close(ours[row], reference[0], rtol=1e-5, atol=1e-6)


def _phase_contrast(maps: torch.Tensor, period: int) -> float:
    """How strongly a map repeats with ``period``: the spread of its mean over the period's
    phases (pixels (i, j) with the same (i mod p, j mod p)) relative to its mean. A smooth map
    has nearly equal phase means (~0); a grid artifact makes some phases much stronger."""
    h, w = maps.shape[-2:]
    phases = torch.stack([maps[..., i:h:period, j:w:period].mean(dim=(-2, -1)) for i in range(period) for j in range(period)], -1)
    return float((phases.std(-1) / phases.mean(-1)).mean())


def _spectral_peak(maps: torch.Tensor, period: int) -> float:
    """Share of the (mean-removed) power spectrum at the frequencies of ``period``."""
    spectrum = torch.fft.fft2(maps - maps.mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    n = maps.shape[-1] // period
    peak = sum(spectrum[..., a * n, b * n] for a in range(period) for b in range(period) if (a, b) != (0, 0))
    return float((peak / spectrum.sum(dim=(-2, -1))).mean())


def test_strided_network_gives_no_stride_periodic_pattern_with_the_fix():
    net = _net(stride=2)  # two stride-2 convs: the input sees a period-4 grid
    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    fixed, plain = [], []
    for image in images:
        features = [("5", c) for c in range(4)]
        fixed.append(saliency(propagate(net, image, features)))
        plain.append(saliency(propagate(net, image, features, strided_fix=False)))
    fixed, plain = torch.cat(fixed), torch.cat(plain)
    live = plain.flatten(1).amax(1) > 0  # channels that fire on the image
    assert live.sum() >= 12
    fixed, plain = fixed[live], plain[live]
    # the level of no periodicity at all: the same maps with their pixels shuffled
    g = torch.Generator().manual_seed(0)
    shuffled = torch.stack([m.flatten()[torch.randperm(m.numel(), generator=g)].view_as(m) for m in fixed])
    for statistic in (_phase_contrast, _spectral_peak):
        chance = statistic(shuffled, 4)
        assert statistic(plain, 4) > 2 * chance  # plain guided backprop shows the stride's grid
        assert statistic(fixed, 4) < 1.5 * chance  # the fix leaves no more periodicity than chance


def test_fix_changes_nothing_on_a_stride_1_network_and_leaves_the_model_as_found():
    net = _net(stride=1).train()
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    a = propagate(net, image, [("3", 1)])
    b = propagate(net, image, [("3", 1)], strided_fix=False)
    assert torch.equal(a, b)
    assert net.training and not net._forward_hooks and all(not m._forward_hooks for m in net)
