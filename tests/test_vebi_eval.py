"""Pieces of ``whyserve eval-vebi`` (whyserve.eval.vebi) that the README's figures rest on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from whyserve.data.flowers import balanced_labels, generate_single_part
from whyserve.eval.vebi import THRESHOLDS, ablation, iou_curve
from whyserve.models import load_model
from whyserve.vebi.fit import Relevance, relevance_path


def test_iou_curve_thresholds_the_heatmap():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2] = True  # 8 pixels
    heatmap = np.zeros((4, 4), dtype=np.float32)
    heatmap[:2, :2] = 1.0  # 4 pixels inside the mask
    heatmap[3, 3] = 0.5  # 1 pixel outside
    curve = iou_curve(heatmap, mask)
    assert curve.shape == THRESHOLDS.shape
    assert curve[THRESHOLDS < 0.5] == pytest.approx(4 / 9)
    assert curve[THRESHOLDS >= 0.5] == pytest.approx(4 / 8)


def test_ablation_zeroes_channels_and_leaves_no_hook():
    spec = load_model("flowers_part")
    relevance = Relevance.load(relevance_path("flowers_part"))
    flowers = generate_single_part(24, 900, labels=balanced_labels(24, 6))
    images = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1).float() / 255.0 for f in flowers])
    rows = ablation(spec, relevance, images, torch.tensor([f.label for f in flowers]), draws=2)
    assert len(rows) == 6
    assert all(0.0 <= v <= 1.0 for row in rows for v in row[:3])
    assert np.mean([r[0] for r in rows]) > 0.9  # the model is right on its own flowers
    assert all(not m._forward_hooks for m in spec.module.modules())
