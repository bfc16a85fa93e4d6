"""The user's own model, as it is: where its ``nn.Module`` comes from, its weights, its class
names and its preprocessing, all named in files (model-config.yaml's ``handler:`` section and
the archive's files), never in whyserve's code.

Sources (``handler.source``):

- ``torchvision:<architecture>``: ``torchvision.models.get_model`` without weights, then the
  state dict (``num_classes`` for a fine-tuned head);
- ``timm:<architecture>``: ``timm.create_model`` without pretrained weights (timm is an optional
  extra), then the state dict; the preprocessing defaults to timm's data config of the model;
- ``python:<package.module>:<factory>``: a callable returning the ``nn.Module`` (given
  ``num_classes`` when set), then the state dict;
- ``model_file``: TorchServe's own convention, the archive's ``--model-file`` (a .py defining
  exactly one ``nn.Module`` subclass, built without arguments) plus ``--serialized-file``;
- ``export``: a ``torch.export`` program (``torch.export.save``'s .pt2) as the weights, its
  module hierarchy rebuilt by ``torch.export.unflatten`` so that layers keep their names and
  every method runs on it; exported with a dynamic batch dimension;
- ``huggingface``: a ``transformers`` image classifier's ``save_pretrained`` folder
  (``whyserve.models.huggingface_source``: ``id2label`` and the image processor's config);
- ``onnx``: an .onnx from any exporter as the weights, served on ONNX Runtime
  (``whyserve.models.onnx_source``: predictions and Score-CAM).

A TorchScript file is taken as the weights of any of the first four (its state dict is read out
of it). It is not a source of its own: TorchScript runs no forward hooks on its layers (a traced
module ignores them without a word), so no method could read the target layer.

Weights are required: a model without them predicts noise, so serving one takes an explicit
``random_weights: true`` (tests). Weights that do not fit the architecture are a
``ModelLoadError`` that names the keys and shapes that differ (``load_state_dict_file``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from whyserve.errors import ModelLoadError
from whyserve.models.spec import ModelSpec, load_state_dict_file
from whyserve.models.user_files import INTERPOLATIONS, Preprocess, read_class_names

logger = logging.getLogger(__name__)

SOURCE_KINDS = (
    "torchvision:<architecture>",
    "timm:<architecture>",
    "python:<package.module>:<factory>",
    "model_file",
    "export",
    "huggingface",
    "onnx",
)
TORCHSCRIPT = (
    "TorchScript runs no forward hooks on its layers, so no method can read a target layer; name the "
    "architecture and give the TorchScript file as the weights (its state dict is read out of it), e.g. "
    "--source torchvision:resnet50 --weights model.pt, or torch.export it (source export)"
)
DYNAMIC_BATCH = 'export with a dynamic batch: dynamic_shapes=({0: torch.export.Dim("batch")},)'


def _from_model_file(path: str | Path) -> nn.Module:
    """TorchServe's ``--model-file`` rule: the file defines exactly one ``nn.Module`` subclass."""
    path = Path(path)
    loader = importlib.util.spec_from_file_location(f"whyserve_user_model_{path.stem}", path)
    if loader is None or loader.loader is None:
        raise ModelLoadError(f"model file {path.name}: not a Python file")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    classes = [
        c for _, c in inspect.getmembers(module, inspect.isclass) if issubclass(c, nn.Module) and c.__module__ == module.__name__
    ]
    if len(classes) != 1:
        names = [c.__name__ for c in classes]
        raise ModelLoadError(f"model file {path.name}: defines {len(classes)} nn.Module classes {names}; TorchServe needs one")
    return classes[0]()


def _from_factory(target: str, num_classes: int | None) -> nn.Module:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ModelLoadError(f"source python:{target}: expected python:<package.module>:<factory>")
    try:
        factory: Callable[..., nn.Module] = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ModelLoadError(f"source python:{target}: {error}") from None
    return factory(**({"num_classes": num_classes} if num_classes is not None else {}))


def _timm(source: str):
    try:
        import timm
    except ImportError:
        raise ModelLoadError(f"source {source}: needs timm (pip install timm)") from None
    return timm


def timm_preprocess(module: nn.Module) -> dict[str, object]:
    """timm's data config of ``module`` as whyserve's preprocessing (resize = crop / crop_pct)."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=module)
    crop = int(config["input_size"][-1])
    interpolation = config["interpolation"] if config["interpolation"] in INTERPOLATIONS else "bilinear"
    return {"resize": int(crop / config["crop_pct"]), "crop": crop, "interpolation": interpolation,
            "mean": list(config["mean"]), "std": list(config["std"])}  # fmt: skip


def load_exported(path: str | Path | None) -> nn.Module:
    """A ``torch.export.save`` file as an eager module with its layers' names (``unflatten``)."""
    if path is None:
        raise ModelLoadError("source export: give the .pt2 torch.export.save wrote as the weights")
    try:
        program = torch.export.load(path)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        name = Path(path).name
        raise ModelLoadError(f"source export: {name} is not a torch.export.save file ({type(error).__name__})") from None
    return torch.export.unflatten(program)


def build_module(source: str, num_classes: int | None = None, model_file: str | Path | None = None) -> nn.Module:
    """The architecture named by ``source`` (see the module docstring), without weights."""
    kind, _, rest = source.partition(":")
    if kind == "torchvision" and rest:
        if rest not in torchvision.models.list_models():
            raise ModelLoadError(f"source {source}: torchvision has no architecture {rest!r}")
        return torchvision.models.get_model(rest, weights=None, **({"num_classes": num_classes} if num_classes else {}))
    if kind == "timm" and rest:
        timm = _timm(source)
        if not timm.is_model(rest):
            raise ModelLoadError(f"source {source}: timm has no architecture {rest!r}")
        return timm.create_model(rest, pretrained=False, **({"num_classes": num_classes} if num_classes else {}))
    if kind == "python" and rest:
        module = _from_factory(rest, num_classes)
    elif source == "model_file":
        if model_file is None:
            raise ModelLoadError("source model_file: the archive has no --model-file (a .py defining the nn.Module)")
        module = _from_model_file(model_file)
    elif source == "torchscript":
        raise ModelLoadError(f"source torchscript: {TORCHSCRIPT}")
    else:
        raise ModelLoadError(f"source {source!r} is not one of {list(SOURCE_KINDS)}")
    if isinstance(module, torch.jit.ScriptModule):
        raise ModelLoadError(f"source {source}: gave a TorchScript module. {TORCHSCRIPT}")
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"source {source}: gave a {type(module).__name__}, not a torch.nn.Module")
    return module


def load_source(
    name: str,
    source: str,
    weights: str | Path | None = None,
    *,
    num_classes: int | None = None,
    classes: str | Path | None = None,
    preprocess: Mapping[str, object] | None = None,
    model_file: str | Path | None = None,
    layer: str | None = None,
    random_weights: bool = False,
) -> ModelSpec:
    """The user's model as a ``ModelSpec`` in eval mode (see the module docstring)."""
    if source == "onnx":
        from whyserve.models.onnx_source import load_onnx  # onnx and onnxruntime: an optional extra

        return load_onnx(name, weights, layer=layer, classes=classes, num_classes=num_classes, preprocess=preprocess)
    class_names = read_class_names(classes) if classes else None
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ModelLoadError(f"{Path(classes).name} names {len(class_names)} classes, num_classes is {num_classes}")
    defaults: dict[str, object] = {}
    if source == "export":
        module = load_exported(weights)
    elif source == "huggingface":
        from whyserve.models.huggingface_source import load_huggingface  # transformers: an optional extra

        module, own_names, defaults = load_huggingface(weights, sized={"resize", "crop"} <= set(preprocess or {}))
        class_names = class_names or own_names
    else:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # random_weights: the same network in every worker
            module = build_module(source, num_classes or (len(class_names) if class_names else None), model_file)
        defaults = timm_preprocess(module) if source.startswith("timm:") else {}
    rules = Preprocess.from_dict({**defaults, **(preprocess or {})})
    if source not in ("export", "huggingface"):  # theirs: the weights file is the model itself
        _load_weights(name, module, weights, random_weights)
    module.eval()
    outputs = _count_outputs(name, module, rules.crop)
    if class_names is not None and outputs != len(class_names):
        raise ModelLoadError(f"model {name}: {outputs} outputs but {len(class_names)} class names")
    return ModelSpec(
        name=name,
        module=module,
        view=rules.view(),
        normalize=rules.normalize,
        input_size=(rules.crop, rules.crop),
        target_layer=layer,
        class_names=class_names or tuple(str(i) for i in range(outputs)),  # no names: the indices
    )


def _load_weights(name: str, module: nn.Module, weights: str | Path | None, random_weights: bool) -> None:
    if weights is not None:
        load_state_dict_file(module, weights)
    elif not random_weights:
        raise ModelLoadError(
            f"model {name}: no weights; give the state dict (torch-model-archiver --serialized-file, "
            "or handler.weights), or set handler.random_weights: true to serve a random network on purpose"
        )
    else:
        logger.warning("whyserve: model %s serves RANDOM weights (handler.random_weights: true)", name)


def _count_outputs(name: str, module: nn.Module, crop: int) -> int:
    """One forward of a batch of two at load: a classifier gives (N, classes) logits."""
    try:
        with torch.no_grad():
            output = module(torch.zeros(2, 3, crop, crop))
    except Exception as error:  # noqa: BLE001 - the model's own failure, named at load rather than per request
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = f"; {DYNAMIC_BATCH}" if "dynamic" in first else ""
        raise ModelLoadError(f"model {name}: a forward of a (2, 3, {crop}, {crop}) batch fails: {first}{hint}") from None
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        kind = f"a tensor of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelLoadError(f"model {name}: forward returns {kind}; whyserve needs (N, classes) logits")
    return int(output.shape[1])
