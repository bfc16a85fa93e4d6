"""Bring your own model: a user's architecture, weights, class names and preprocessing, named in
files, archived by ``whyserve archive`` and served by a real TorchServe, without whyserve's
source knowing the model. Random initialisation (no weights can be downloaded here), saved as
the user's own state dict."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import requests
import timm
import torch
import torchvision
from kserve_helpers import native_server
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from serving_helpers import ROOT
from whyserve import Explainer, ExplainRequest
from whyserve.backends import open_backend
from whyserve.data.flowers import generate
from whyserve.errors import InvalidOption, ModelLoadError
from whyserve.methods.fgvis_defense import RecordActivations
from whyserve.models.huggingface_source import preprocess_of
from whyserve.models.sources import load_source
from whyserve.models.user_files import Preprocess, read_class_names
from whyserve.photos import photo_path
from whyserve.serving import launcher
from whyserve.serving.archive import unpack
from whyserve.serving.service import archived_spec
from whyserve.vebi.features import conv_layers

WHYSERVE = [sys.executable, "-m", "whyserve"]
TINY_NET = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))
"""
TINY_LABELS = ["daisy", "rose", "tulip"]


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> Path:
    """What a user brings: a fine-tuned 10-class ResNet-50 with TorchServe's index_to_name.json
    (the [id, name] shape), a model file with its state dict and labels.txt, a ResNet-18 head."""
    folder = tmp_path_factory.mktemp("user")
    torch.manual_seed(1)
    resnet50 = torchvision.models.resnet50(num_classes=10).eval()
    torch.save(resnet50.state_dict(), folder / "resnet50_ft.pth")
    export_elsewhere(resnet50, folder)
    names = {str(i): [f"n{i:08d}", f"part {i}"] for i in range(10)}
    (folder / "index_to_name.json").write_text(json.dumps(names))
    (folder / "tiny_net.py").write_text(TINY_NET)
    namespace: dict = {}
    exec(TINY_NET, namespace)
    torch.save(namespace["TinyNet"]().state_dict(), folder / "tiny_net.pth")
    (folder / "labels.txt").write_text("\n".join(TINY_LABELS) + "\n")
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), folder / "resnet18_head.pth")
    torch.save(timm.create_model("vit_small_patch16_224", num_classes=10).state_dict(), folder / "vit.pth")
    torch.save(timm.create_model("convnext_atto", num_classes=4).state_dict(), folder / "convnext.pth")
    save_huggingface_vit(folder / "hf_vit")
    return folder


HF_LABELS = [f"hf {i}" for i in range(10)]
HF_LAYER = "vit.layers.3.layernorm_before"  # the last block's first norm, as for timm's ViT


def save_huggingface_vit(folder: Path) -> None:
    """A transformers ViT from a config written here (small, for speed), as save_pretrained
    writes it, with its image processor's config."""
    config = ViTConfig(
        hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
        id2label=dict(enumerate(HF_LABELS)), label2id={name: i for i, name in enumerate(HF_LABELS)},
    )  # fmt: skip
    ViTForImageClassification(config).eval().save_pretrained(folder)
    ViTImageProcessor().save_pretrained(folder)


def export_elsewhere(model: torch.nn.Module, folder: Path) -> None:
    """The ResNet-50 as its user's own exporters write it: TorchScript (traced), torch.export
    (a dynamic batch, and a fixed one), and ONNX with their own input name, once with a dynamic
    batch and once fixed to one image."""
    example = torch.zeros(1, 3, 224, 224)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' deprecation notices
        torch.jit.save(torch.jit.trace(model, example), folder / "resnet50_ft_ts.pt")
        batch = ({0: torch.export.Dim("batch")},)
        torch.export.save(
            torch.export.export(model, (example.expand(2, -1, -1, -1),), dynamic_shapes=batch), folder / "resnet50.pt2"
        )
        torch.export.save(torch.export.export(model, (example,)), folder / "resnet50_fixed.pt2")
        for name, dynamic in (("resnet50_ft.onnx", {"pixel_values": {0: "batch"}}), ("resnet50_fixed.onnx", None)):
            torch.onnx.export(model, (example,), folder / name, dynamo=False, input_names=["pixel_values"], dynamic_axes=dynamic)


def archive(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([*WHYSERVE, "archive", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def store(user_files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store")
    built = [
        archive("--source", "torchvision:resnet50", "--weights", user_files / "resnet50_ft.pth", "--classes",
                user_files / "index_to_name.json", "--name", "resnet50_ft", "--out", out),
        archive("--source", "model_file", "--model-file", user_files / "tiny_net.py", "--weights", user_files / "tiny_net.pth",
                "--classes", user_files / "labels.txt", "--resize", "72", "--crop", "64", "--mean", "0.5", "0.5", "0.5",
                "--std", "0.25", "0.25", "0.25", "--name", "tiny_net", "--out", out),
        archive("--source", "python:torchvision.models:resnet18", "--num-classes", "4", "--weights",
                user_files / "resnet18_head.pth", "--name", "resnet18_head", "--out", out),
        archive("--source", "timm:vit_small_patch16_224", "--weights", user_files / "vit.pth", "--classes",
                user_files / "index_to_name.json", "--layer", "blocks.11.norm1", "--name", "vit", "--out", out),
        archive("--source", "timm:convnext_atto", "--weights", user_files / "convnext.pth", "--num-classes", "4",
                "--name", "convnext", "--out", out),
        archive("--source", "torchvision:resnet50", "--weights", user_files / "resnet50_ft_ts.pt", "--classes",
                user_files / "index_to_name.json", "--name", "resnet50_ts", "--out", out),
        archive("--source", "onnx", "--weights", user_files / "resnet50_ft.onnx", "--classes",
                user_files / "index_to_name.json", "--name", "resnet50_onnx", "--out", out),
        archive("--source", "export", "--weights", user_files / "resnet50.pt2", "--classes",
                user_files / "index_to_name.json", "--name", "resnet50_export", "--out", out),
        archive("--source", "huggingface", "--weights", user_files / "hf_vit", "--layer", HF_LAYER, "--name", "hf_vit",
                "--out", out),
    ]  # fmt: skip
    for done in built:
        assert done.returncode == 0, done.stderr
    fit_vebi(user_files, out)
    return out


def fit_vebi(user_files: Path, out: Path) -> None:
    """VEBI on a user's model: fitted on a folder of labelled images (one sub-folder per class),
    the relevance file then archived beside the model."""
    folder = user_files / "train"
    for k, flower in enumerate(generate(24, 5, labels=[i % 3 for i in range(24)])):
        (folder / TINY_LABELS[flower.label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(flower.image).save(folder / TINY_LABELS[flower.label] / f"{k}.png")
    relevance = user_files / "tiny_net.vebi.json"
    done = subprocess.run(
        [*WHYSERVE, "vebi-fit", "--archive", str(out / "tiny_net.mar"), "--image-folder", str(folder), "--out", str(relevance),
         "--iterations", "500"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tiny_net: 24 images" in done.stdout
    done = archive("--source", "model_file", "--model-file", user_files / "tiny_net.py", "--weights", user_files / "tiny_net.pth",
                   "--classes", user_files / "labels.txt", "--resize", "72", "--crop", "64", "--vebi-relevance", relevance,
                   "--name", "tiny_net_vebi", "--out", out)  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    models = ["resnet50_ft", "tiny_net", "resnet18_head", "vit", "convnext", "resnet50_ts", "resnet50_onnx", "resnet50_export"]
    models += ["hf_vit", "tiny_net_vebi"]
    served = launcher.start(store, models, ROOT / "configs" / "local.properties", tmp_path_factory.mktemp("ts"))
    try:
        served.wait_ready(timeout=300)
        yield served
    finally:
        served.stop()


def post(server, model: str, **headers: str) -> requests.Response:
    return requests.post(
        f"{server.inference_url}/predictions/{model}",
        data=photo_path("chelsea").read_bytes(),
        headers={"Content-Type": "image/jpeg", **{f"X-Explain-{k.title()}": v for k, v in headers.items()}},
        timeout=120,
    )


def in_process(store: Path, name: str, tmp_path: Path):
    """The archive unpacked and loaded as a worker loads it: its spec and its layer."""
    spec = archived_spec(store / f"{name}.mar", tmp_path / name)
    return spec, spec.target_layer


def photo_tensor(store: Path, name: str, tmp_path: Path, photo: str) -> torch.Tensor:
    return in_process(store, name, tmp_path)[0].preprocess(Image.open(photo_path(photo)))


# -- served end to end ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "contrastive"])
@pytest.mark.parametrize(
    "model, labels, layer",
    [
        ("resnet50_ft", {f"part {i}" for i in range(10)}, "layer4"),
        ("tiny_net", set(TINY_LABELS), "features"),
        ("resnet18_head", {"0", "1", "2", "3"}, "layer4"),  # no class names: the indices
        ("vit", {f"part {i}" for i in range(10)}, "blocks.11.norm1"),  # patch tokens as a 14x14 map
        ("convnext", {"0", "1", "2", "3"}, "norm_pre"),  # found: the last map, timm's preprocessing
        ("resnet50_ts", {f"part {i}" for i in range(10)}, "layer4"),  # the weights read out of TorchScript
        ("resnet50_export", {f"part {i}" for i in range(10)}, "layer4"),  # torch.export's program, unflattened
        ("hf_vit", set(HF_LABELS), HF_LAYER),  # transformers: id2label, its processor's preprocessing
    ],
)
def test_user_models_are_served_with_their_own_classes_and_layer(server, model, labels, layer, method):
    answer = post(server, model, method=method, outputs="heatmap,values")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {p["label"] for p in body["predictions"]} <= labels
    assert len(body["predictions"]) == min(5, len(labels))
    assert body["explanation"]["method"] == method and body["explanation"]["layer"] == layer
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["explanation"]["heatmap"]["data"])))
    assert heatmap.size == ((64, 64) if model == "tiny_net" else (224, 224))


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    ["resnet50_ft", "tiny_net", "resnet18_head", "vit", "convnext", "resnet50_ts", "resnet50_onnx", "resnet50_export", "hf_vit"],
)
def test_served_scorecam_follows_the_budget_hint(server, model):
    """Score-CAM on ResNet-50 or a ViT may be over the 10 s budget at 64 channels here; the 422
    names what fits, and asking for that is answered."""
    refused = post(server, model, method="scorecam", channels="64")
    if refused.status_code == 200:  # a fast machine fits 64 channels in 10 s
        hint = "channels: 64"
    else:
        assert refused.status_code == 422, refused.text
        hint = refused.json()["error"]["valid"][0]
    channels = hint.split(":")[1].split()[0]
    answer = post(server, model, method="scorecam", channels=channels)
    assert answer.status_code == 200, answer.text
    explanation = answer.json()["explanation"]
    assert explanation["method"] == "scorecam"
    if model == "tiny_net":  # 32 channels: 64 asked is every channel, the exact method, nothing ranked
        assert "details" not in explanation
        return
    # a bare .onnx has no gradient for the default target ranking: the reply says it ranked by spread
    assert explanation["details"]["ranking"] == ("spread" if model == "resnet50_onnx" else "target")
    assert ("ranking_fallback" in explanation["details"]) == (model == "resnet50_onnx")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet50_ft", "tiny_net", "vit", "hf_vit"])
def test_served_gradcam_values_equal_the_in_process_map(server, store, model, tmp_path):
    """What the worker serves is what the engine computes in-process on the same archive."""
    body = post(server, model, method="gradcam", target="1", outputs="values").json()
    spec, layer = in_process(store, model, tmp_path)
    x = spec.preprocess(Image.open(photo_path("chelsea")))[None]
    ours = Explainer(spec, layer=layer).explain(x, [ExplainRequest("gradcam", 1)]).explanations[0].layer_heatmap
    served = np.asarray(body["explanation"]["values"]["data"], dtype=np.float32)
    assert served.shape == ours.shape
    assert np.abs(served - ours).max() <= 1e-4  # the reply rounds to 4 decimals


@pytest.mark.slow
def test_gradcam_of_the_archived_resnet50_equals_pytorch_grad_cam(store, tmp_path):
    assert_gradcam_parity(store, "resnet50_ft", tmp_path, lambda module: module.layer4[-1])


def assert_gradcam_parity(store: Path, name: str, tmp_path: Path, peer_layer, reshape_transform=None) -> None:
    """Our Grad-CAM of the archive equals pytorch-grad-cam's on ``peer_layer(module)``, ≤ 1e-4."""
    spec, layer = in_process(store, name, tmp_path)
    x = torch.stack([spec.preprocess(Image.open(photo_path(n))) for n in ("chelsea", "coffee")])
    targets = [3, 8]
    ours = np.stack(
        [e.heatmap for e in Explainer(spec, layer=layer).explain(x, [ExplainRequest("gradcam", t) for t in targets]).explanations]
    )
    cam = GradCAM(model=spec.module, target_layers=[peer_layer(spec.module)], reshape_transform=reshape_transform)
    try:
        peer = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    finally:
        cam.activations_and_grads.release()
    assert np.abs(ours - peer).max() <= 1e-4
    assert ours.std() > 0.05  # not a flat map


@pytest.mark.slow
@pytest.mark.parametrize("model, layer", [("tiny_net", "features"), ("hf_vit", HF_LAYER)])
def test_the_same_archive_is_served_by_the_kserve_native_runtime(store, server, tmp_path, model, layer):
    """``whyserve serve-kserve --archive``: the .mar TorchServe serves, read the same way."""
    with native_server(["--archive", str(store / f"{model}.mar")], model, tmp_path) as base:
        instance = {"image": {"b64": base64.b64encode(photo_path("chelsea").read_bytes()).decode()}, "method": "gradcam"}
        native = requests.post(f"{base}/v1/models/{model}:predict", json={"instances": [instance]}, timeout=120)
    assert native.status_code == 200, native.text
    served = post(server, model, method="gradcam", outputs="heatmap").json()
    answer = native.json()["predictions"][0]
    assert answer["predictions"] == served["predictions"]
    assert answer["explanation"]["layer"] == layer
    assert answer["explanation"]["heatmap"]["data"] == served["explanation"]["heatmap"]["data"]


@pytest.mark.slow
def test_gradcam_of_the_archived_vit_equals_pytorch_grad_cam_with_its_reshape_transform(store, tmp_path):
    def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:  # pytorch-grad-cam's ViT tutorial
        grid = tokens[:, 1:, :].reshape(tokens.size(0), 14, 14, tokens.size(2))
        return grid.transpose(2, 3).transpose(1, 2)

    assert_gradcam_parity(store, "vit", tmp_path, lambda module: module.blocks[-1].norm1, reshape_transform)


@pytest.mark.slow
def test_gradcam_of_the_archived_huggingface_vit_equals_pytorch_grad_cam(store, tmp_path):
    def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:, :].reshape(tokens.size(0), 14, 14, tokens.size(2)).permute(0, 3, 1, 2)

    assert_gradcam_parity(store, "hf_vit", tmp_path, lambda module: module.get_submodule(HF_LAYER), reshape_transform)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50_ts", "resnet50_export"])
def test_torchscript_weights_and_torch_export_give_the_eager_models_maps(store, tmp_path, name):
    """A TorchScript file as the weights of its architecture, and a torch.export program run
    itself: the same network, the same maps."""
    x = torch.stack([photo_tensor(store, "resnet50_ft", tmp_path, n) for n in ("chelsea", "coffee", "chelsea")])
    requests_ = [ExplainRequest("gradcam", 3), ExplainRequest("contrastive", 3, 8), ExplainRequest("scorecam", 3, channels=8)]
    maps = []
    for archived in ("resnet50_ft", name):
        spec, layer = in_process(store, archived, tmp_path)
        maps.append(np.stack([e.heatmap for e in Explainer(spec, layer=layer).explain(x, requests_).explanations]))
    assert np.abs(maps[0] - maps[1]).max() <= 1e-4 and maps[0].std() > 0.05


@pytest.mark.slow
def test_scorecam_on_any_onnx_export_equals_the_eager_model(store, user_files, tmp_path):
    """Score-CAM on the user's .onnx (their input name; a dynamic or a fixed batch), on ONNX
    Runtime, against Score-CAM on the eager ResNet-50 it was exported from. The channels are
    ranked by spread: the target ranking needs a gradient, which a bare .onnx does not give."""
    eager, layer = in_process(store, "resnet50_ft", tmp_path)
    x = torch.stack([photo_tensor(store, "resnet50_ft", tmp_path, n) for n in ("chelsea", "coffee")])
    asked = [ExplainRequest("scorecam", t, channels=16, ranking="spread") for t in (3, 8)]
    reference = np.stack([e.heatmap for e in Explainer(eager, layer=layer).explain(x, asked).explanations])
    for file in ("resnet50_ft.onnx", "resnet50_fixed.onnx"):
        spec = load_source("onnx", "onnx", user_files / file, num_classes=10)
        assert spec.target_layer == "/layer4/layer4.2/relu_2/Relu_output_0"  # layer4's output, found in the graph
        explainer = Explainer(spec, backend=open_backend("onnxruntime", spec))
        result = explainer.explain(x, asked)
        ours = np.stack([e.heatmap for e in result.explanations])
        assert result.backend.startswith("onnxruntime") and np.abs(ours - reference).max() <= 1e-4, file


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, needs", [("bcos", "bcos needs a B-cos network"), ("vebi", "vebi needs the model's VEBI relevance file")]
)
def test_methods_a_user_model_lacks_are_refused_naming_what_they_need(server, method, needs):
    answer = post(server, "resnet50_ft", method=method)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert needs in error["message"] and "gradcam" in error["valid"] and method not in error["valid"]


@pytest.mark.slow
def test_vebi_fitted_on_a_users_images_is_served(server, store, tmp_path):
    """Its features are the model's own layers (each conv read after its ReLU), as in-process."""
    body = post(server, "tiny_net_vebi", method="vebi", target="rose").json()
    features = body["explanation"]["features"]
    assert body["explanation"]["method"] == "vebi" and features, body
    assert {f["layer"] for f in features} <= {"features.1", "features.4"}
    spec, _ = in_process(store, "tiny_net_vebi", tmp_path)
    x = spec.preprocess(Image.open(photo_path("chelsea")))[None]
    ours = Explainer(spec).explain(x, [ExplainRequest("vebi", 1)]).explanations[0].artifacts["features"]
    assert [(f["layer"], f["channel"]) for f in features] == [(f["layer"], f["channel"]) for f in ours]


def test_vebi_fit_reads_resnet_layers_that_run_once():
    """torchvision's ResNet calls one relu module three times per block: its convs are read as is."""
    layers = conv_layers(torchvision.models.resnet18(num_classes=3).eval(), (64, 64))
    assert "layer1.0.conv1" in layers and "layer1.0.relu" not in layers and layers[0] == "relu"


@pytest.mark.slow
def test_gradient_methods_on_an_onnx_file_are_refused_naming_what_works(server):
    answer = post(server, "resnet50_onnx", method="gradcam")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "ONNX has no autograd" in error["message"] and error["valid"] == ["scorecam", "none"]
    assert post(server, "resnet50_onnx", method="none").json()["predictions"][0]["label"].startswith("part ")


def test_onnx_files_that_cannot_be_explained_are_load_errors(user_files, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        load_source("x", "onnx", tmp_path / "junk.onnx")
    with pytest.raises(ModelLoadError, match=r"is not a spatial .* the last ones are .*Relu_output_0"):
        load_source("x", "onnx", user_files / "resnet50_ft.onnx", layer="/fc/Gemm_output_0")
    with pytest.raises(ModelLoadError, match=r"takes 224x224 images; preprocess.crop is 192"):
        load_source("x", "onnx", user_files / "resnet50_fixed.onnx", preprocess={"crop": 192})
    with pytest.raises(ModelLoadError, match="has 10 outputs, num_classes says 4"):
        load_source("x", "onnx", user_files / "resnet50_ft.onnx", num_classes=4)


def test_an_onnx_vit_is_refused_rather_than_explained_on_its_patch_embedding(user_files, tmp_path):
    """The graph's last spatial tensor is the patch embedding's convolution, under the transformer."""
    vit = load_source("vit", "timm:vit_small_patch16_224", user_files / "vit.pth", num_classes=10).module
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(vit, (torch.zeros(1, 3, 224, 224),), tmp_path / "vit.onnx", dynamo=False)
    with pytest.raises(ModelLoadError, match=r"is a token model .* patch embedding .*source timm:<arch>, huggingface or export"):
        load_source("x", "onnx", tmp_path / "vit.onnx")


def test_a_torchscript_module_is_refused_naming_the_fix(user_files, tmp_path):
    """Hooks do not run inside TorchScript (a traced module ignores them silently): no layer."""
    (tmp_path / "scripted.py").write_text(
        f"import torch\ndef build():\n    return torch.jit.load({str(user_files / 'resnet50_ft_ts.pt')!r})\n"
    )
    for source in ("torchscript", "python:scripted:build"):
        done = subprocess.run(
            [*WHYSERVE, "archive", "--source", source, "--weights", str(user_files / "resnet50_ft_ts.pt"), "--name", "x",
             "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )  # fmt: skip
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "TorchScript runs no forward hooks" in done.stderr and "--source torchvision:resnet50" in done.stderr


def test_a_vit_without_a_named_layer_is_refused_naming_its_token_layers(user_files, tmp_path):
    """The automatic layer never takes attention heads (N, heads, tokens, head_dim) or the patch
    embedding under the transformer: it names the token layers to choose from."""
    done = archive("--source", "timm:vit_small_patch16_224", "--weights", user_files / "vit.pth", "--num-classes", "10",
                   "--name", "x", "--out", tmp_path)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "a token model" in done.stderr and "blocks.11.norm1" in done.stderr


@pytest.mark.parametrize(
    "source, layer, found",
    [
        ("timm:swin_tiny_patch4_window7_224", None, "norm"),  # Swin's stages are (N, h, w, C): the final norm is found
        ("timm:convnext_tiny", "stages.3.blocks.2.norm", "stages.3.blocks.2.norm"),  # a ConvNeXt block's own norm
    ],
)
def test_channels_last_maps_equal_pytorch_grad_cam_with_a_permute(source, layer, found):
    """timm's NHWC layers explained as (N, C, h, w), as pytorch-grad-cam's reshape_transform does."""
    spec = load_source("m", source, num_classes=5, layer=layer, random_weights=True)
    x = torch.stack([spec.preprocess(Image.open(photo_path(n))) for n in ("chelsea", "coffee")])
    explainer = Explainer(spec)
    assert explainer.backend.layer_name == found and explainer.backend.channels_last
    ours = np.stack([e.heatmap for e in explainer.explain(x, [ExplainRequest("gradcam", t) for t in (1, 3)]).explanations])
    peer_layer = spec.module.get_submodule(found)
    cam = GradCAM(model=spec.module, target_layers=[peer_layer], reshape_transform=lambda t: t.permute(0, 3, 1, 2))
    try:
        peer = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in (1, 3)])
    finally:
        cam.activations_and_grads.release()
    assert np.abs(ours - peer).max() <= 1e-4 and ours.std() > 0.05


def test_fgvis_defense_gates_a_vits_gelus(user_files):
    """FGVis's defense sees every activation call: a ViT's GELUs, one per block."""
    spec = load_source("vit", "timm:vit_small_patch16_224", user_files / "vit.pth", num_classes=10)
    with torch.no_grad(), RecordActivations() as record:
        spec.module(torch.zeros(1, 3, 224, 224))
    assert len(record.outputs) == 12 and record.outputs[0].shape == (1, 197, 1536)


def test_a_named_layer_that_is_not_a_map_is_refused_at_load(user_files):
    """Attention heads (N, heads, tokens, head_dim) pass a 4-D check; named, they are refused."""
    spec = load_source("vit", "timm:vit_small_patch16_224", user_files / "vit.pth", num_classes=10, layer="blocks.11.attn.k_norm")
    with pytest.raises(InvalidOption, match=r"outputs \(1, 6, 197, 64\), not a spatial map"):
        Explainer(spec)


# -- refused at archive time, with the fix named ------------------------------------------


def test_a_torch_export_with_a_fixed_batch_is_refused_naming_dynamic_shapes(user_files, tmp_path):
    done = archive("--source", "export", "--weights", user_files / "resnet50_fixed.pt2", "--name", "x", "--out", tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "a forward of a (2, 3, 224, 224) batch fails" in done.stderr and 'torch.export.Dim("batch")' in done.stderr
    done = archive("--source", "export", "--weights", user_files / "resnet50_ft.pth", "--name", "x", "--out", tmp_path)
    assert done.returncode == 2 and "resnet50_ft.pth is not a torch.export.save file" in done.stderr


def test_a_huggingface_vit_without_a_named_layer_names_its_token_layers(user_files, tmp_path):
    done = archive("--source", "huggingface", "--weights", user_files / "hf_vit", "--name", "x", "--out", tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "a token model" in done.stderr and HF_LAYER in done.stderr
    done = archive("--source", "huggingface", "--weights", tmp_path, "--name", "x", "--out", tmp_path)
    assert done.returncode == 2 and "no config.json" in done.stderr
    (tmp_path / "config.json").write_text((user_files / "hf_vit" / "config.json").read_text())
    done = archive("--source", "huggingface", "--weights", tmp_path, "--name", "x", "--out", tmp_path)
    assert done.returncode == 2 and "a sharded checkpoint is not read" in done.stderr and "Traceback" not in done.stderr


def test_huggingface_preprocessing_is_its_image_processors(user_files):
    """The pixels the ViT sees are its ViTImageProcessor's (a stretch to 224x224, mean/std 0.5),
    to one grey level of resampling rounding, on a photo that is not square."""
    spec = load_source("hf", "huggingface", user_files / "hf_vit" / "model.safetensors")
    photo = Image.open(photo_path("coffee"))
    assert photo.size[0] != photo.size[1]
    theirs = ViTImageProcessor.from_pretrained(user_files / "hf_vit")(photo, return_tensors="pt")["pixel_values"][0]
    assert (spec.preprocess(photo) - theirs).abs().max().item() <= 2 / 255 / 0.5 + 1e-6
    assert spec.class_names == tuple(HF_LABELS)


@pytest.mark.parametrize(
    "processor, expected",
    [
        ({"size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3},
         {"resize": 256, "crop": 224, "interpolation": "bicubic"}),
        ({"size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}},
         {"resize": 256, "crop": 224, "interpolation": "bilinear"}),
        ({"size": {"height": 384, "width": 384}, "image_mean": [0.1, 0.2, 0.3]},
         {"resize": 384, "crop": 384, "aspect": "stretch", "mean": [0.1, 0.2, 0.3]}),
    ],
)  # fmt: skip
def test_image_processor_configs_become_whyserve_preprocessing(processor, expected):
    """ConvNeXt's crop_pct, BEiT/DeiT's shortest edge and crop, ViT's stretch."""
    rules = preprocess_of(processor)
    assert {key: rules[key] for key in expected} == expected
    with pytest.raises(ModelLoadError, match=r"set handler.preprocess resize and crop"):
        preprocess_of({"size": {"height": 224, "width": 300}})


def test_weights_of_another_architecture_are_a_one_line_error(user_files, tmp_path):
    done = archive(
        "--source", "torchvision:resnet18", "--weights", user_files / "resnet50_ft.pth", "--name", "x", "--out", tmp_path
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert (
        "do not fit the architecture" in done.stderr and "layer1.0.conv1.weight (64, 64, 1, 1) vs (64, 64, 3, 3)" in done.stderr
    )
    assert not (tmp_path / "x.mar").exists()


def test_no_weights_is_refused_unless_random_weights_is_asked_for(tmp_path):
    done = archive("--source", "torchvision:resnet18", "--name", "x", "--out", tmp_path)
    assert done.returncode == 2 and "no weights" in done.stderr and "random_weights" in done.stderr
    done = archive("--source", "torchvision:resnet18", "--random-weights", "--name", "x", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    config, _ = unpack(tmp_path / "x.mar", tmp_path / "x")
    assert config["handler"]["random_weights"] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (("--source", "torchvision:resnet5O"), "torchvision has no architecture 'resnet5O'"),
        (("--source", "keras:resnet50"), "is not one of"),
        (("--source", "python:no_such_package.models:build"), "No module named 'no_such_package'"),
        (("--source", "model_file"), "the archive has no --model-file"),
        (("--source", "torchvision:resnet18", "--random-weights", "--layer", "layer9"), "no module named 'layer9'"),
        (("--source", "timm:vit_small_patch16_224", "--random-weights", "--layer", "blocks.11.attn.k_norm"), "not a spatial map"),
        (("--source", "torchvision:resnet18", "--random-weights", "--crop", "300"), "crop 300 is larger than resize 256"),
    ],
)
def test_a_source_that_cannot_be_served_names_the_fix(args, message, tmp_path):
    done = archive(*args, "--name", "x", "--out", tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


# -- files, not code ---------------------------------------------------------------------


def test_class_names_in_both_torchserve_shapes_and_one_per_line(tmp_path):
    (tmp_path / "a.json").write_text('{"1": "dog", "0": "cat"}')
    (tmp_path / "b.json").write_text('{"0": ["n02123045", "tabby"], "1": ["n02085620", "Chihuahua"]}')
    (tmp_path / "c.txt").write_text("cat\n\ndog\n")
    assert read_class_names(tmp_path / "a.json") == ("cat", "dog")
    assert read_class_names(tmp_path / "b.json") == ("tabby", "Chihuahua")
    assert read_class_names(tmp_path / "c.txt") == ("cat", "dog")


@pytest.mark.parametrize(
    "text, message",
    [('{"0": "cat", "2": "dog"}', r"indices must be 0..1; missing \[1\]"), ("[1, 2]", "expected"), ("{", "not JSON")],
)
def test_bad_class_files_are_load_errors(tmp_path, text, message):
    (tmp_path / "index_to_name.json").write_text(text)
    with pytest.raises(ModelLoadError, match=message):
        read_class_names(tmp_path / "index_to_name.json")


def test_class_names_must_match_the_head(user_files, tmp_path):
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(ModelLoadError, match="model m: 3 outputs but 2 class names"):
        load_source(
            "m", "model_file", user_files / "tiny_net.pth", classes=tmp_path / "labels.txt", model_file=user_files / "tiny_net.py"
        )
    with pytest.raises(ModelLoadError, match="names 2 classes, num_classes is 5"):
        load_source("m", "torchvision:resnet18", classes=tmp_path / "labels.txt", num_classes=5, random_weights=True)
    with pytest.raises(ModelLoadError, match=r"fc.weight \(10, 2048\) vs \(2, 2048\)"):  # the head sized from the names
        load_source("m", "torchvision:resnet50", user_files / "resnet50_ft.pth", classes=tmp_path / "labels.txt")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"size": 224}, r"unknown key\(s\) \['size'\]"),
        ({"interpolation": "lanczos"}, "known: \\['bicubic', 'bilinear', 'nearest'\\]"),
        ({"mean": [0.5, 0.5]}, "not three numbers"),
        ({"std": [0.5, 0, 0.5]}, "must be positive"),
        ({"resize": "256"}, "not a positive integer"),
    ],
)
def test_bad_preprocessing_is_a_load_error(values, message):
    with pytest.raises(ModelLoadError, match=message):
        Preprocess.from_dict(values)


def test_preprocessing_from_config_is_what_the_model_sees():
    rules = Preprocess.from_dict({"resize": 40, "crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    view = rules.view()(Image.new("RGB", (80, 60), (255, 0, 0)))
    assert view.size == (32, 32)
    tensor = rules.normalize(view)
    assert torch.allclose(tensor[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
