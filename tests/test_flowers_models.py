"""The shipped flowers models: they load offline, and classify fresh flowers (no training here)."""

import numpy as np
import pytest
import torch

from whyserve import available_models, load_model
from whyserve.data.flowers import CLASS_NAMES, as_arrays, generate
from whyserve.methods.registry import methods_for
from whyserve.models.flowers import WEIGHTS


@pytest.fixture(scope="module")
def heldout():
    images, labels = as_arrays(generate(400, seed=20260))  # neither training (1) nor its held-out set (2)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, torch.from_numpy(labels)


@pytest.mark.parametrize("name", ["flowers_cnn", "flowers_bcos"])
def test_shipped_model_reaches_97_percent_on_fresh_flowers(name, heldout):
    spec = load_model(name)
    x, y = heldout
    with torch.inference_mode():
        predicted = torch.cat([spec.module(x[i : i + 100]).argmax(1) for i in range(0, len(x), 100)])
    accuracy = float((predicted == y).float().mean())
    assert accuracy >= 0.97, f"{name}: {accuracy:.2%}"


def _names(methods) -> tuple[str, ...]:
    return tuple(m.name for m in methods)


def test_specs_and_weights_ship_with_the_package():
    assert {"flowers_cnn", "flowers_bcos"} <= set(available_models())
    assert (WEIGHTS / "flowers_cnn.pt").stat().st_size < 1_000_000
    assert (WEIGHTS / "flowers_bcos.pt").stat().st_size < 1_000_000
    cnn, bcos = load_model("flowers_cnn"), load_model("flowers_bcos")
    assert cnn.class_names == bcos.class_names == CLASS_NAMES and len(CLASS_NAMES) == 8
    assert _names(methods_for(cnn)) == ("gradcam", "contrastive", "scorecam", "fgvis", "vebi")  # vebi: it has a relevance file
    assert _names(methods_for(bcos)) == ("gradcam", "contrastive", "scorecam", "bcos", "fgvis")  # bcos: a B-cos model
    assert cnn.input_size == (96, 96)


def test_view_and_normalize_give_rgb_in_unit_range():
    from PIL import Image

    spec = load_model("flowers_bcos")
    flower = generate(1, seed=3)[0]
    photo = Image.fromarray(flower.image).resize((200, 150))
    x = spec.preprocess(photo)
    assert x.shape == (3, 96, 96) and float(x.min()) >= 0 and float(x.max()) <= 1
    same = spec.preprocess(Image.fromarray(flower.image))
    assert np.allclose(same.permute(1, 2, 0).numpy() * 255, flower.image)


def test_bcos_model_has_no_biases():
    spec = load_model("flowers_bcos")
    names = [n for n, _ in spec.module.named_parameters()]
    assert not [n for n in names if "bias" in n], names
    assert all(getattr(m, "bias", None) in (None, False) for m in spec.module.modules())


def test_single_part_model_reaches_97_percent_on_fresh_single_part_flowers():
    from whyserve.data.flowers import SINGLE_CLASS_NAMES, generate_single_part

    spec = load_model("flowers_part")
    assert spec.class_names == SINGLE_CLASS_NAMES and len(SINGLE_CLASS_NAMES) == 6
    flowers = generate_single_part(300, seed=20260)  # neither training (1) nor its held-out set (2)
    assert all(f.evidence_parts == (("petals", "centre", "leaves")[f.label // 2],) for f in flowers)
    images, labels = as_arrays(flowers)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        predicted = torch.cat([spec.module(x[i : i + 100]).argmax(1) for i in range(0, len(x), 100)])
    accuracy = float((predicted == torch.from_numpy(labels)).float().mean())
    assert accuracy >= 0.97, f"flowers_part: {accuracy:.2%}"
