"""Which nodes of a vision graph stay in float when it is quantized to INT8.

Found from the graph's structure, not from node names: VisionZip's selection is
everything TopK or ArgMax depends on or feeds, up to the encoder's and projector's
weight layers (MatMul/Gemm/Conv with a constant weight), which are quantized. That
covers the attention-score path of layer L (q·kᵀ, Softmax, ReduceSum, ...), the
key normalisation and similarity, the gathers, scatters and merges. So does what
follows the projector's last weight layer: an any-res graph's layout (constant
gathers, the newline rows, OneVision's bilinear downscale as MatMuls by constant
matrices), which only moves and blends finished tokens. Every Softmax
and every MatMul that reads attention probabilities stays float as well, and so
does the patch embedding (a weight layer reading the pixels): the most sensitive
layer to quantize, and ~0.1% of a ViT's arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

DECISION_OPS = frozenset({"TopK", "ArgMax"})  # the ops whose outputs are choices
WEIGHT_OPS = frozenset({"MatMul", "Gemm", "Conv"})  # the ops INT8 speeds up
QUANTIZED_OPS = sorted(WEIGHT_OPS)


def constant_names(graph: onnx.GraphProto) -> set[str]:
    names = {init.name for init in graph.initializer}
    names.update(node.output[0] for node in graph.node if node.op_type == "Constant")
    return names


def is_weight_layer(node: onnx.NodeProto, constants: set[str]) -> bool:
    """A MatMul/Gemm/Conv with a constant weight: an encoder or projector layer."""
    return node.op_type in WEIGHT_OPS and any(name in constants for name in node.input[1:2])


def _walk(start: Iterable[onnx.NodeProto], neighbours, stop) -> set[str]:
    seen: set[str] = set()
    stack = list(start)
    while stack:
        node = stack.pop()
        if node.name in seen or stop(node):
            continue
        seen.add(node.name)
        stack.extend(neighbours(node))
    return seen


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes to keep in float (quantize_static's nodes_to_exclude)."""
    graph = model.graph
    constants = constant_names(graph)
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def upstream(node):
        return [producer[name] for name in node.input if name in producer]

    def downstream(node):
        return [c for name in node.output for c in consumers.get(name, [])]

    def stop(node):
        return is_weight_layer(node, constants)

    decisions = [node for node in graph.node if node.op_type in DECISION_OPS]
    outputs = [producer[value.name] for value in graph.output if value.name in producer]
    keep = (
        _walk(decisions, upstream, stop) | _walk(decisions, downstream, stop) | _walk(outputs, upstream, stop)
    )
    inputs = {value.name for value in graph.input}
    for node in graph.node:
        if is_weight_layer(node, constants) and node.input[0] in inputs:
            keep.add(node.name)
        if node.op_type == "Softmax":
            keep.add(node.name)
            keep.update(c.name for c in downstream(node))  # attention-probability MatMuls
    return sorted(keep)
