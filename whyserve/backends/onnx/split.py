"""Splitting a model at its target layer: the head above the layer as a module of its own.

The head (activations -> logits) lets gradient methods run where the trunk (input ->
activations) is not PyTorch: ONNX Runtime computes the activations, the head recomputes the
logits from them with autograd. The split is found with torch.fx, so any model whose layers
above the target layer read only the layer's output (a sequential tail: pooling, linear...)
can be split; one whose head also reads an earlier tensor (a connection that skips the
layer) is refused with ``HeadSplitError``.
"""

from __future__ import annotations

from torch import fx, nn


class HeadSplitError(ValueError):
    """The model cannot be split at the layer: the head is not a function of its output alone."""


class _LayerTracer(fx.Tracer):
    """Traces into the target layer's ancestors only: every other module stays one call."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        return not self.layer.startswith(f"{qualname}.")


def split_head(model: nn.Module, layer: str) -> fx.GraphModule:
    """The part of ``model`` above ``layer``: a module taking the layer's output (N, K, h, w)
    and returning the model's output. It shares ``model``'s submodules (and their weights)."""
    name = type(model).__name__
    try:
        graph = _LayerTracer(layer).trace(model)
    except Exception as error:  # noqa: BLE001 - whatever fx cannot trace, the reason is the message
        raise HeadSplitError(f"cannot split {name} at {layer!r}: torch.fx cannot trace it ({error})") from None
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(calls) != 1:
        raise HeadSplitError(f"cannot split {name} at {layer!r}: the layer is called {len(calls)} times per forward")
    start = calls[0]
    trunk = _downstream([n for n in graph.nodes if n.op == "placeholder"])
    head = _downstream([start]) - {start}
    for node in head:
        skipped = [arg for arg in node.all_input_nodes if arg in trunk and arg is not start and arg not in head]
        if skipped:
            raise HeadSplitError(
                f"cannot split {name} at {layer!r}: the layers above it also read {skipped[0].name!r}, "
                "computed below the layer (a connection that skips it); explain at a layer whose output "
                "alone feeds the rest of the model (e.g. the last block), or use the torch backend"
            )
    return _head_module(model, graph, start, head, trunk)


def _downstream(roots: list[fx.Node]) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(node.users)
    return seen


def _head_module(model: nn.Module, graph: fx.Graph, start: fx.Node, head: set[fx.Node], trunk: set[fx.Node]) -> fx.GraphModule:
    """A new graph: a placeholder for the layer's output, then every node above it (and the
    constants / attributes they read), in the original order."""
    head_graph = fx.Graph()
    env = {start: head_graph.placeholder("activations")}
    for node in graph.nodes:
        if node in head or (node not in trunk and node.op != "placeholder"):
            env[node] = head_graph.node_copy(node, lambda n: env[n])
    module = fx.GraphModule(model, head_graph, class_name="Head")
    module.graph.eliminate_dead_code()
    module.recompile()
    return module
