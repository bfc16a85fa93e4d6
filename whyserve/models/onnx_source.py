"""An .onnx file from any exporter as a whyserve model (source ``onnx``).

The file needs one float input (N, 3, H, W) and a first output of logits (N, classes). The
target layer is a tensor of the graph, named (``layer``) or found as ``find_target_layer``
finds a module: the last tensor that is a spatial map, probed by running the graph with every
tensor as an output. The graph is then rewritten into the signature ``whyserve export-onnx``
writes (input ``input``, outputs ``logits`` and ``activations``, the layer in the metadata), so
the ONNX Runtime backend serves it unchanged: predictions and Score-CAM. ONNX has no autograd
and no PyTorch head comes with the file, so gradient methods are not served (the backend says
so, naming what works).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from torch import nn

from whyserve.errors import ModelLoadError
from whyserve.layers import is_spatial_map, larger_size, token_grid
from whyserve.models.spec import ModelSpec
from whyserve.models.user_files import Preprocess, read_class_names

INPUT, LOGITS, ACTIVATIONS = "input", "logits", "activations"
META_MODEL, META_LAYER = "whyserve.model", "whyserve.layer"
ELEMENT_FLOAT = onnx.TensorProto.FLOAT


class OnnxModel(nn.Module):
    """The rewritten graph (``serialized``) and its target tensor. Not callable: the ONNX
    Runtime backend opens the one session that runs it."""

    def __init__(self, serialized: bytes, layer: str) -> None:
        super().__init__()
        self.serialized = serialized
        self.layer = layer


def load_onnx(
    name: str,
    path: str | Path | None,
    *,
    layer: str | None = None,
    classes: str | Path | None = None,
    num_classes: int | None = None,
    preprocess: Mapping[str, object] | None = None,
) -> ModelSpec:
    if path is None:
        raise ModelLoadError("source onnx: no .onnx file; give it as the weights (torch-model-archiver --serialized-file)")
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ModelLoadError(f"source onnx: {path.name} is not an ONNX model onnx can read ({type(error).__name__})") from None
    source_input, shape = _image_input(model, path.name)
    rules = Preprocess.from_dict({**_size_defaults(shape), **(preprocess or {})})
    if shape[2:] != (rules.crop, rules.crop) and all(isinstance(d, int) for d in shape[2:]):
        raise ModelLoadError(f"source onnx: {path.name} takes {shape[2]}x{shape[3]} images; preprocess.crop is {rules.crop}")
    logits, layer_name, outputs = _probe(model, source_input, layer, (rules.crop, rules.crop), path.name)
    class_names = read_class_names(classes) if classes else None
    for label, count in (("class names", class_names and len(class_names)), ("num_classes", num_classes)):
        if count is not None and count != outputs:
            raise ModelLoadError(f"source onnx: {path.name} has {outputs} outputs, {label} says {count}")
    rewritten = _rewrite(model, source_input, logits, layer_name, name)
    return ModelSpec(
        name=name,
        module=OnnxModel(rewritten.SerializeToString(), layer_name),
        view=rules.view(),
        normalize=rules.normalize,
        input_size=(rules.crop, rules.crop),
        target_layer=layer_name,
        class_names=class_names or tuple(str(i) for i in range(outputs)),
    )


def _image_input(model: onnx.ModelProto, file: str) -> tuple[str, tuple[int | str, ...]]:
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    shapes = [tuple(d.dim_value or d.dim_param or "?" for d in i.type.tensor_type.shape.dim) for i in inputs]
    if len(inputs) != 1 or len(shapes[0]) != 4 or inputs[0].type.tensor_type.elem_type != ELEMENT_FLOAT:
        found = [(i.name, s) for i, s in zip(inputs, shapes)]
        raise ModelLoadError(f"source onnx: {file} needs one float32 input (N, 3, H, W); found {found}")
    return inputs[0].name, shapes[0]


def _size_defaults(shape: tuple[int | str, ...]) -> dict[str, int]:
    """A fixed input size is the crop; resize keeps torchvision's 224/256 ratio."""
    height, width = shape[2:]
    if isinstance(height, int) and height == width:
        return {"crop": height, "resize": round(height / 0.875)}
    return {}


def _probe(
    model: onnx.ModelProto, source_input: str, layer: str | None, size: tuple[int, int], file: str
) -> tuple[str, str, int]:
    """(logits tensor, target tensor, number of outputs), from runs with every tensor an output."""
    logits = model.graph.output[0].name
    order = [out for node in model.graph.node for out in node.output if out]
    first = _all_shapes(model, source_input, order, size)
    if len(first.get(logits, ())) != 2:
        raise ModelLoadError(f"source onnx: {file}'s first output {logits!r} is {first.get(logits)}, not (N, classes) logits")
    try:
        second = _all_shapes(model, source_input, order, larger_size(size))
    except Exception:  # noqa: BLE001 - a graph fixed to one input size
        second = None
    spatial = [t for t in order if is_spatial_map(first.get(t, ()), second and second.get(t), size)]
    if layer is None:
        if not spatial:
            raise ModelLoadError(f"source onnx: {file} has no spatial (N, C, h, w) tensor to explain")
        layer = spatial[-1]
        above = order[order.index(layer) + 1 :]
        if any(len(first.get(t, ())) == 3 and first[t][0] == 1 and token_grid(first[t][1]) for t in above):
            raise ModelLoadError(
                f"source onnx: {file} is a token model (a ViT): its last map {layer!r} is the patch embedding under the "
                "transformer, not a map to explain, and an ONNX graph's tokens are not explained; serve the PyTorch model "
                "(source timm:<arch>, huggingface or export) with a token layer"
            )
    elif layer not in spatial:
        raise ModelLoadError(
            f"source onnx: layer {layer!r} is not a spatial (N, C, h, w) tensor of {file}; the last ones are {spatial[-3:]}"
        )
    return logits, layer, int(first[logits][1])


def _all_shapes(model: onnx.ModelProto, source_input: str, tensors: list[str], size: tuple[int, int]) -> dict[str, tuple]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in tensors)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(None, {source_input: np.zeros((1, 3, *size), np.float32)})
    return {t: tuple(v.shape) for t, v in zip(tensors, values) if isinstance(v, np.ndarray)}


def _rewrite(model: onnx.ModelProto, source_input: str, logits: str, layer: str, name: str) -> onnx.ModelProto:
    """``model`` with whyserve's signature: Identity nodes rename the input and the outputs."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    taken = {out for node in graph.node for out in node.output} | {i.name for i in graph.input}
    for wanted, meant in ((INPUT, source_input), (LOGITS, logits), (ACTIVATIONS, layer)):
        if wanted in taken and wanted != meant:
            raise ModelLoadError(f"source onnx: the graph already has a tensor named {wanted!r}; rename it in the export")
    if source_input != INPUT:
        original = next(i for i in graph.input if i.name == source_input)
        original.name = INPUT
        graph.node.insert(0, helper.make_node("Identity", [INPUT], [source_input]))
    for target, source in ((LOGITS, logits), (ACTIVATIONS, layer)):
        if target != source:
            graph.node.append(helper.make_node("Identity", [source], [target]))
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(LOGITS, ELEMENT_FLOAT, ["batch", "classes"]),
            helper.make_tensor_value_info(ACTIVATIONS, ELEMENT_FLOAT, ["batch", "channels", "height", "width"]),
        ]
    )
    helper.set_model_props(rewritten, {META_MODEL: name, META_LAYER: layer})
    return rewritten
