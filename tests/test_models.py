import pytest
import torch

from conftest import CAT_CLASSES
from whyserve import InvalidOption, available_models, load_model
from whyserve.errors import ModelLoadError
from whyserve.layers import find_target_layer


def test_efficientnet_lite0_real_weights_recognise_real_photos(effnet, effnet_explainer, effnet_batch):
    result = effnet_explainer.explain(effnet_batch, [None, None])
    chelsea, coffee = (result.topk(i, 5, effnet.class_names) for i in range(2))
    assert chelsea[0]["index"] in CAT_CLASSES, chelsea
    assert coffee[0]["label"] in {"espresso", "cup"}, coffee
    assert abs(sum(p["probability"] for p in chelsea) - 1) < 0.1  # a confident, real classifier


def test_imagenet_class_names_come_from_a_package(effnet):
    assert len(effnet.class_names) == 1000
    assert effnet.class_names[285] == "Egyptian cat"


def test_preprocessing_gives_the_documented_tensor(effnet, photos):
    x = effnet.preprocess(photos["chelsea"])
    assert x.shape == (3, 224, 224)
    assert effnet.view(photos["chelsea"]).size == (224, 224)
    assert x.min() >= -127 / 128 and x.max() <= 128 / 128  # (x - 127) / 128 of 8-bit pixels


@pytest.mark.parametrize("name, layer, channels", [("efficientnet_lite0", "head_act", 1280), ("resnet18", "layer4", 512)])
def test_target_layer_is_found_automatically(name, layer, channels):
    spec = load_model(name)
    assert find_target_layer(spec.module, spec.input_size) == layer
    captured = []
    dict(spec.module.named_modules())[layer].register_forward_hook(lambda m, i, o: captured.append(o.shape))
    with torch.no_grad():
        spec.module(torch.zeros(1, 3, 224, 224))
    assert captured == [torch.Size([1, channels, 7, 7])]


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(InvalidOption) as error:
        load_model("efficientnet_b9")
    assert "efficientnet_lite0" in error.value.valid
    assert set(available_models()) >= {"efficientnet_lite0", "resnet18"}


def test_user_weights_load_strictly(tmp_path, resnet):
    good = tmp_path / "good.pt"
    torch.save(resnet.module.state_dict(), good)
    assert torch.equal(load_model("resnet18", good).module.fc.weight, resnet.module.fc.weight)
    bad = tmp_path / "bad.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(
        ModelLoadError,
        match=r"do not fit the architecture: missing .*\(121\); shape file vs model \['fc.weight \(3, 3\) vs \(1000, 512\)'\]",
    ):
        load_model("resnet18", bad)
