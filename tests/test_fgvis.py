"""FGVis (whyserve.methods.fgvis): the games optimise what they claim, batches keep each
row's own target and game, and the model is left as found."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_model_state import _state as model_state

from whyserve import Explainer, ExplainRequest, InvalidOption, load_model
from whyserve.data.flowers import make_flower
from whyserve.methods.fgvis import FGVisOptions, optimise, references, to_pixels

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def flowers():
    return load_model("flowers_cnn")


@pytest.fixture(scope="module")
def flower_batch(flowers):
    picked = [make_flower(7, i) for i in range(2)]
    images = torch.stack([flowers.normalize(Image.fromarray(f.image)) for f in picked])
    return images, [f.label for f in picked]


def _black(spec):
    return spec.normalize(Image.new("RGB", spec.input_size[::-1]))


def _loss(spec, image, mask, target, options, reference):
    """The game's objective at one mask (what the optimisation minimises)."""
    e = mask * image + (1 - mask) * reference
    with torch.no_grad():
        logp = torch.log_softmax(spec.module(e[None]), 1)[0, target]
    if options.game == "deletion":
        return float(logp.exp() + options.weight * (1 - mask).sum())
    return float(-logp + options.weight * mask.sum())


@pytest.mark.parametrize("game", ["preservation", "deletion"])
def test_games_lower_their_loss_and_keep_the_mask_in_range(flowers, flower_batch, game):
    images, labels = flower_batch
    options = FGVisOptions(game=game, iterations=40)
    result = optimise(flowers.module, images, labels, [options] * 2, _black(flowers))
    r = references(["black"] * 2, images, _black(flowers))
    assert result.masks.min() >= 0 and result.masks.max() <= 1
    for i in range(2):
        before = _loss(flowers, images[i], torch.ones_like(images[i]), labels[i], options, r[i])
        after = _loss(flowers, images[i], result.masks[i], labels[i], options, r[i])
        assert after < 0.9 * before, (game, before, after)
        assert 0 < result.iterations[i] <= 40
    expected = 1 - result.masks.mean(1) if game == "deletion" else result.masks.mean(1)
    torch.testing.assert_close(result.heatmaps, expected)
    torch.testing.assert_close(result.explanations, result.masks * images + (1 - result.masks) * r)


def test_preservation_keeps_the_class_with_a_smaller_mask(flowers, flower_batch):
    images, labels = flower_batch
    options = FGVisOptions(game="preservation", iterations=100, lam=1e-5)
    result = optimise(flowers.module, images, labels, [options] * 2, _black(flowers))
    with torch.no_grad():
        predicted = flowers.module(result.explanations).argmax(1).tolist()
    assert predicted == labels
    assert float(result.masks.mean()) < 0.75  # the mask really shrank
    assert (result.probabilities > 0.5).all()


def test_deletion_stops_once_the_target_is_gone(flowers, flower_batch):
    images, labels = flower_batch
    result = optimise(flowers.module, images, labels, [FGVisOptions(iterations=300)] * 2, _black(flowers))
    with torch.no_grad():
        predicted = flowers.module(result.explanations).argmax(1).tolist()
    assert all(p != t for p, t in zip(predicted, labels))
    assert max(result.iterations) < 300  # stopped early


def test_a_mixed_batch_equals_its_rows_alone(flowers, flower_batch):
    images, labels = flower_batch
    rows = [
        (labels[0], FGVisOptions(game="deletion", iterations=25)),
        (3, FGVisOptions(game="preservation", iterations=15, defense=False, reference="blur")),
    ]
    batch = optimise(flowers.module, images, [t for t, _ in rows], [o for _, o in rows], _black(flowers))
    for i, (target, options) in enumerate(rows):
        alone = optimise(flowers.module, images[i : i + 1], [target], [options], _black(flowers))
        assert batch.iterations[i] == alone.iterations[0]
        # batched convolutions round differently; the steps amplify it a little
        torch.testing.assert_close(batch.masks[i], alone.masks[0], atol=5e-3, rtol=0)
        torch.testing.assert_close(batch.probabilities[i], alone.probabilities[0], atol=5e-3, rtol=0)
    assert batch.iterations[1] == 15


def test_references(flowers, flower_batch):
    images, _ = flower_batch
    r = references(["black", "blur", "mean"], images[[0, 0, 0]], _black(flowers))
    assert float(r[0].abs().max()) == 0.0  # flowers take RGB in [0, 1]: black is 0
    assert float(r[1].std()) < float(images[0].std())  # blurred
    np.testing.assert_allclose(r[2].mean(dim=(1, 2)).numpy(), images[0].mean(dim=(1, 2)).numpy(), atol=1e-6)
    assert float(r[2].std(dim=(1, 2)).max()) < 1e-6  # constant per channel


def _state(model):
    # the engine's checks, and no TorchFunctionMode (the defense's) left on the stack
    return {**model_state(model), "function_modes": torch._C._len_torch_function_stack()}


@pytest.mark.parametrize("mode", ["grad", "inference_mode"])
def test_the_model_is_left_as_found(flowers, flower_batch, mode):
    images, labels = flower_batch
    model = flowers.module
    model.train()
    model.blocks[0][0].weight.requires_grad_(False)
    context = torch.inference_mode if mode == "inference_mode" else torch.enable_grad
    try:
        with context():
            before = _state(model)
            result = optimise(model, images, labels, [FGVisOptions(iterations=5)] * 2, _black(flowers))
            assert _state(model) == before
        assert result.masks.requires_grad is False
        model.eval()
        with torch.no_grad():
            again = optimise(model, images, labels, [FGVisOptions(iterations=5)] * 2, _black(flowers))
        torch.testing.assert_close(result.masks, again.masks)  # explained in eval mode all the same
    finally:
        model.blocks[0][0].weight.requires_grad_(True)
        model.eval()


def test_efficientnet_preprocessed_black_reference(effnet):
    black = _black(effnet)
    assert torch.allclose(black, torch.full_like(black, -127 / 128))


@pytest.mark.parametrize("name", ["flowers", "effnet"])
def test_explanation_images_render_back_to_the_pixels(name, flowers, effnet, photos):
    spec = flowers if name == "flowers" else effnet
    view = spec.view(photos["chelsea"])
    white = spec.normalize(Image.new("RGB", spec.input_size[::-1], (255, 255, 255)))
    pixels = to_pixels(spec.normalize(view)[None], _black(spec), white)[0]
    np.testing.assert_array_equal(pixels, np.asarray(view))


# -- the registered method (whyserve.methods.fgvis.FGVis) ---------------------------------------


def test_fgvis_in_a_mixed_batch_keeps_each_target_and_reports_its_run(flowers, flower_batch):
    images, labels = flower_batch
    x = images[[0, 1, 0]]
    requests = [
        ExplainRequest("fgvis", target=labels[0], iterations=20),
        ExplainRequest("gradcam", target=2),
        ExplainRequest("fgvis", target=3, game="preservation", iterations=8, defense="off", reference="mean"),
    ]
    result = Explainer(flowers).explain(x, requests)
    first, cam, second = result.explanations
    assert (first.method, first.target, cam.method, cam.target, second.target) == ("fgvis", labels[0], "gradcam", 2, 3)
    assert first.details["game"] == "deletion" and first.details["defense"] is True and first.details["lambda"] == 1e-5
    assert second.details == {**second.details, "game": "preservation", "defense": False, "reference": "mean", "iterations": 8}
    for e in (first, second):
        assert e.heatmap.shape == (96, 96) and e.heatmap.min() >= 0 and e.heatmap.max() <= 1
        assert e.artifacts["explanation_image"].shape == (96, 96, 3) and e.artifacts["explanation_image"].dtype == np.uint8
    # the explanation image is what the model scores: p(e) as reported
    with torch.no_grad():
        p = torch.softmax(flowers.module(flowers.normalize(Image.fromarray(first.artifacts["explanation_image"]))[None]), 1)[
            0, labels[0]
        ]
    assert abs(float(p) - first.details["probability"]) < 0.02  # 8-bit rounding of e
    assert first.details["probability"] < 0.5


@pytest.mark.parametrize(
    "options, name",
    [({"game": "hide"}, "game"), ({"iterations": 0}, "iterations"), ({"iterations": "many"}, "iterations"),
     ({"defense": "maybe"}, "defense"), ({"lambda": -1}, "lambda"), ({"reference": "white"}, "reference"),
     ({"lr": "nan"}, "lr"), ({"weighting": "probability"}, "weighting")],
)  # fmt: skip
def test_bad_fgvis_options_name_the_option(flowers, options, name):
    with pytest.raises(InvalidOption) as error:
        Explainer(flowers).resolve(ExplainRequest("fgvis", **options))
    assert error.value.option == name


def test_whyserve_explain_method_fgvis_writes_the_explanation_image(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "whyserve.cli", "explain", "chelsea", "--model", "flowers_cnn", "--method", "fgvis",
         "--game", "preservation", "--iterations", "5", "--defense", "off", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "fgvis: why" in run.stdout
    for suffix, size in (("heatmap", (96, 96)), ("explanation", (96, 96))):
        assert Image.open(tmp_path / f"chelsea_{suffix}.png").size == size
