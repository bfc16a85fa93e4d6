"""Every metric on hand-made maps whose value is known."""

import numpy as np
import pytest
import torch

from whyserve.eval.metrics import (
    auc,
    average_drop,
    bootstrap_interval,
    confidence_change,
    confidence_changes,
    deletion_auc,
    energy_pointing_game,
    grid_pointing_game,
    increase_in_confidence,
    insertion_auc,
    pointing_game,
)


def square_mask(size=10, lo=2, hi=6):
    mask = np.zeros((size, size), dtype=bool)
    mask[lo:hi, lo:hi] = True
    return mask


def test_energy_pointing_game_is_the_share_of_positive_energy_in_the_mask():
    mask = square_mask()  # 16 pixels
    saliency = np.zeros((10, 10))
    saliency[mask] = 1.0  # 16 inside
    saliency[9, :] = 2.0  # 20 outside
    saliency[0, 0] = -5.0  # negative values do not count
    assert energy_pointing_game(saliency, mask) == pytest.approx(16 / 36)
    assert energy_pointing_game(mask.astype(float), mask) == 1.0
    assert energy_pointing_game(np.zeros((10, 10)), mask) == 0.0
    assert energy_pointing_game(-np.ones((10, 10)), mask) == 0.0


def test_pointing_game_hits_when_the_maximum_is_in_the_mask():
    mask = square_mask()
    saliency = np.zeros((10, 10))
    saliency[3, 3] = 1.0
    assert pointing_game(saliency, mask) == 1.0
    saliency[8, 8] = 2.0
    assert pointing_game(saliency, mask) == 0.0
    assert pointing_game(saliency, mask, tolerance=5) == 1.0  # (8,8) is 4.24 from (5,5)
    assert pointing_game(saliency, mask, tolerance=4) == 0.0


def test_grid_pointing_game_is_the_share_in_the_right_cell():
    saliency = np.zeros((8, 8))
    saliency[:4, :4] = 1.0  # 16 in cell 0
    saliency[4:, 4:] = 0.25  # 4 in cell 3
    saliency[0, 7] = -3  # negative: ignored
    assert grid_pointing_game(saliency, 0) == pytest.approx(0.8)
    assert grid_pointing_game(saliency, 3) == pytest.approx(0.2)
    assert grid_pointing_game(saliency, 1) == 0.0


class MeanOfRegion:
    """A 'model' whose class-0 probability is the mean of channel 0 over a region."""

    def __init__(self, mask):
        self.mask = torch.as_tensor(mask)

    def __call__(self, x):
        p = x[:, 0][:, self.mask].mean(1)
        return torch.stack([p, 1 - p], 1)


def test_deletion_and_insertion_auc_of_perfect_and_reversed_maps():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :] = True  # half the pixels carry the evidence
    model = MeanOfRegion(mask)
    image = torch.ones(1, 4, 4)
    perfect = mask.astype(float) + np.linspace(0, 0.1, 16).reshape(4, 4)  # a strict order
    reversed_ = -perfect
    # Deleting the evidence first: p falls linearly from 1 to 0 over the first half, then stays 0.
    assert deletion_auc(model, image, perfect, 0, steps=16) == pytest.approx(0.25)
    # Deleting it last: p stays 1 over the first half, then falls to 0: 0.5 + 0.25.
    assert deletion_auc(model, image, reversed_, 0, steps=16) == pytest.approx(0.75)
    baseline = torch.zeros_like(image)
    assert insertion_auc(model, image, perfect, 0, baseline, steps=16) == pytest.approx(0.75)
    assert insertion_auc(model, image, reversed_, 0, baseline, steps=16) == pytest.approx(0.25)


def test_auc_is_the_trapezoid_over_unit_interval():
    assert auc(np.array([1.0, 1.0, 1.0])) == 1.0
    assert auc(np.array([1.0, 0.0])) == 0.5
    assert auc(np.array([0.0, 1.0, 0.0])) == 0.5


def test_average_drop_and_increase_in_confidence():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :] = True
    model = MeanOfRegion(mask)
    image = torch.full((1, 4, 4), 0.8)  # Y = 0.8
    keep_all = np.ones((4, 4))
    half = np.full((4, 4), 0.5)  # O = 0.4: a drop of 50 %
    evidence_only = mask.astype(float)  # O = 0.8: no drop, no increase
    assert confidence_change(model, image, keep_all, 0) == pytest.approx((0.0, 0.0))
    assert confidence_change(model, image, half, 0) == pytest.approx((0.5, 0.0))
    assert confidence_change(model, image, evidence_only, 0) == pytest.approx((0.0, 0.0))
    # class 1 (p = 1 - mean): masking to half raises it from 0.2 to 0.6: an increase
    assert confidence_change(model, image, half, 1) == pytest.approx((0.0, 1.0))
    changes = [(0.5, 0.0), (0.0, 1.0), (0.1, 0.0), (0.0, 0.0)]
    assert average_drop(changes) == pytest.approx(15.0)
    assert increase_in_confidence(changes) == pytest.approx(25.0)


def test_confidence_change_blends_toward_the_baseline():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :] = True
    model = MeanOfRegion(mask)
    image = torch.full((1, 4, 4), 0.8)  # Y = 0.8
    half = np.full((4, 4), 0.5)
    # 0.5 * 0.8 + 0.5 * 0.4 = 0.6: a drop of 25 % (toward black it is 50 %)
    assert confidence_change(model, image, half, 0, torch.full((1, 4, 4), 0.4)) == pytest.approx((0.25, 0.0))
    # a baseline equal to the image: nothing changes whatever the map
    assert confidence_change(model, image, np.zeros((4, 4)), 0, image.clone()) == pytest.approx((0.0, 0.0))
    # all baselines in one batch: each as on its own
    baselines = [None, torch.full((1, 4, 4), 0.4), image.clone()]
    one_by_one = [confidence_change(model, image, half, 0, b) for b in baselines]
    assert confidence_changes(model, image, half, 0, baselines) == one_by_one


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.5, 0.1, 20), rng.normal(0.5, 0.1, 2000)
    low, high = bootstrap_interval(list(small), seed=1)
    assert low < small.mean() < high
    assert bootstrap_interval(list(small), seed=1) == (low, high)  # seeded: reproducible
    big_low, big_high = bootstrap_interval(list(large), seed=1)
    assert big_high - big_low < (high - low) / 5  # ~ 1 / sqrt(n): 10x narrower for 100x n
    # the standard error of a mean of 20 draws of sd 0.1 is 0.022: the interval is ~ 4 of them wide
    assert 0.05 < high - low < 0.12
