"""whyserve's localisation metrics equal Quantus 0.6.0's on the same maps, masks and mosaics.

Maps: Grad-CAM of ``flowers_cnn`` (real shipped weights) on generated flowers and on the fair
2x2 grids ``whyserve eval`` uses, plus hand-made signed maps for the conventions. Quantus is
called with its normalisation and abs switched off (its defaults rescale or take |a|), so both
see the same numbers. Conventions that differ, each pinned below:

- energy pointing game vs ``AttributionLocalisation``: whyserve counts positive energy only;
  Quantus does too only with ``positive_attributions=True`` (its default, abs=True, counts |a|).
  Quantus adds 1e-9 to the denominator (a difference below 1e-8 here).
- pointing game vs ``PointingGame``: with tied maxima whyserve takes the first in row-major
  order, Quantus counts a hit if any maximum is in the mask.
- grid pointing game vs ``Focus``: the same share of positive energy in the target's cells;
  Focus marks every cell of the target class, whyserve's scores one cell (the fair grids hold
  the target class in one cell only, so both agree there). Focus insists on a model even with
  precomputed maps (it checks the argument only), so it gets ``flowers_cnn``'s.
"""

import numpy as np
import pytest
import quantus  # test-only: requirements/quantus.txt, installed --no-deps by scripts/setup
import torch

from whyserve import Explainer, ExplainRequest, load_model
from whyserve.data.flowers import generate, make_fair_grid
from whyserve.eval import metrics

OFF = {"abs": False, "normalise": False, "disable_warnings": True, "display_progressbar": False}


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0


@pytest.fixture(scope="module")
def cnn():
    spec = load_model("flowers_cnn")
    return spec, Explainer(spec)


@pytest.fixture(scope="module")
def flower_maps(cnn):
    _spec, explainer = cnn
    flowers = generate(8, 300, labels=list(range(8)))
    x = torch.stack([_tensor(f.image) for f in flowers])
    maps = np.stack([e.heatmap for e in explainer.explain(x, [ExplainRequest("gradcam", f.label) for f in flowers]).explanations])
    masks = np.stack([f.evidence_mask for f in flowers])
    return x.numpy(), np.array([f.label for f in flowers]), maps, masks


def _quantus(metric, x, y, a, s=None, model=None, **call) -> np.ndarray:
    return np.asarray(
        metric(model=model, x_batch=x, y_batch=y, a_batch=a[:, None], s_batch=None if s is None else s[:, None], **call)
    )


def test_energy_pointing_game_equals_attribution_localisation(flower_maps):
    x, y, maps, masks = flower_maps
    theirs = _quantus(quantus.AttributionLocalisation(positive_attributions=True, **OFF), x, y, maps, masks)
    ours = np.array([metrics.energy_pointing_game(a, s) for a, s in zip(maps, masks)])
    assert np.abs(ours - theirs).max() <= 1e-6 and ours.std() > 0.01
    # signed maps: the positive-energy convention is what makes them agree
    rng = np.random.default_rng(0)
    signed = rng.normal(size=maps.shape).astype(np.float32)
    positive = _quantus(quantus.AttributionLocalisation(positive_attributions=True, **OFF), x, y, signed, masks)
    assert np.abs(np.array([metrics.energy_pointing_game(a, s) for a, s in zip(signed, masks)]) - positive).max() <= 1e-6
    with_abs = _quantus(quantus.AttributionLocalisation(positive_attributions=False, **{**OFF, "abs": True}), x, y, signed, masks)
    assert np.abs(with_abs - positive).max() > 1e-3  # Quantus's default (|a|) is a different number


def test_pointing_game_equals_quantus_without_ties(flower_maps):
    x, y, maps, masks = flower_maps
    theirs = _quantus(quantus.PointingGame(**OFF), x, y, maps, masks)
    ours = np.array([metrics.pointing_game(a, s) for a, s in zip(maps, masks)])
    assert np.array_equal(ours, theirs)
    # ties: the first maximum (row-major) is outside the mask, a later one inside
    tie, mask = np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), bool)
    tie[0, 0, 0] = tie[0, 3, 3] = 1.0
    mask[0, 3, 3] = True
    assert metrics.pointing_game(tie[0], mask[0]) == 0.0
    assert _quantus(quantus.PointingGame(**OFF), np.zeros((1, 3, 4, 4), np.float32), np.zeros(1), tie, mask)[0] == 1.0


def test_grid_pointing_game_equals_focus_on_the_fair_mosaics(cnn):
    spec, explainer = cnn
    grids = [make_fair_grid(102, i) for i in range(8)]
    x = torch.stack([_tensor(g.image) for g, _ in grids])
    targets = [g.labels[c] for g, c in grids]
    maps = np.stack([e.heatmap for e in explainer.explain(x, [ExplainRequest("gradcam", t) for t in targets]).explanations])
    positions = [tuple(int(label == t) for label in g.labels) for (g, _), t in zip(grids, targets)]
    theirs = _quantus(
        quantus.Focus(mosaic_shape=x.shape[1:], **OFF),
        x.numpy(),
        np.array(targets),
        maps,
        model=spec.module,
        custom_batch=positions,
    )
    ours = np.array([metrics.grid_pointing_game(a, c) for a, (_, c) in zip(maps, grids)])
    assert np.abs(ours - theirs).max() <= 1e-6 and ours.std() > 0.01
