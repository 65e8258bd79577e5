"""Structural checks of an exported vision graph: TensorRT-compilable by construction.

docs/design.md: static shapes except batch; the selection uses only TopK, Gather*,
Scatter*, CumSum, MatMul, ArgMax, OneHot/Equal and arithmetic; no NonZero, Loop,
If, Compress or Unique (what masked_select and boolean indexing export to);
TopK's K is a constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from zipvlm.bundle.errors import ExportError

# Ops whose output shape depends on data, or that TensorRT cannot compile well.
FORBIDDEN_OPS = frozenset(
    {
        "NonZero",
        "Loop",
        "If",
        "Compress",
        "Unique",
        "Scan",
        "SequenceAt",
        "SplitToSequence",
        "SequenceConstruct",
    }
)
# Everything else the vision graph may contain (encoder, VisionZip, projector).
ALLOWED_OPS = frozenset(
    {
        # selection
        "TopK",
        "Gather",
        "GatherElements",
        "GatherND",
        "ScatterElements",
        "ScatterND",
        "CumSum",
        "ArgMax",
        "OneHot",
        "Equal",
        # encoder, projector and ordinary arithmetic
        "Conv",
        "MatMul",
        "Gemm",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Neg",
        "Exp",
        "Erf",
        "Tanh",
        "Sigmoid",
        "Softmax",
        "LayerNormalization",
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "ReduceL2",
        "Max",
        "Min",
        "Clip",
        "Abs",
        "Where",
        "Not",
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "And",
        "Or",
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Slice",
        "Split",
        "Expand",
        "Tile",
        "Shape",
        "Size",
        "Range",
        "ConstantOfShape",
        "Constant",
        "Identity",
        "Cast",
        "CastLike",
    }
)
# An INT8 graph (zipvlm calib quantize) adds explicit quantization.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Q/DQ next to these would quantize VisionZip's choice of tokens or the attention probabilities.
FLOAT_ONLY_OPS = frozenset(
    {
        "TopK",
        "Gather",
        "GatherElements",
        "GatherND",
        "ScatterElements",
        "ScatterND",
        "CumSum",
        "ArgMax",
        "OneHot",
        "Softmax",
    }
)


@dataclass(frozen=True)
class GraphReport:
    """What the checks found: ops used (with counts) and the I/O shapes."""

    op_counts: dict[str, int]
    inputs: dict[str, list]
    outputs: dict[str, list]


def _shape(value_info: onnx.ValueInfoProto) -> list:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims]


def check_vision_graph(
    path: Path, expected: dict[str, list], extra_ops: frozenset[str] = frozenset()
) -> GraphReport:
    """Run onnx.checker and the op-set, TopK and static-shape checks; raise ExportError.

    `extra_ops` widens the allowed set (QDQ_OPS for an INT8 graph).
    """
    model = onnx.load(str(path), load_external_data=False)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected {path.name}: {str(exc).splitlines()[0]}") from None

    op_counts: dict[str, int] = {}
    for node in _all_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            raise ExportError(f"{path.name} uses custom op {node.domain}::{node.op_type}")
        op_counts[node.op_type] = op_counts.get(node.op_type, 0) + 1
    bad = sorted(set(op_counts) & FORBIDDEN_OPS)
    unknown = sorted(set(op_counts) - ALLOWED_OPS - extra_ops - FORBIDDEN_OPS)
    if bad or unknown:
        raise ExportError(f"{path.name} uses ops outside the TensorRT-safe set: {', '.join(bad + unknown)}")
    _check_topk_constant(model)

    shapes = {vi.name: _shape(vi) for vi in list(model.graph.input) + list(model.graph.output)}
    for name, want in expected.items():
        got = shapes.get(name)
        if got is None:
            raise ExportError(f"{path.name} has no tensor named '{name}' (has {sorted(shapes)})")
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want, strict=True)):
            raise ExportError(f"{path.name}: '{name}' has shape {got}, expected {want}")
        if not isinstance(got[0], str) or any(not isinstance(d, int) for d in got[1:]):
            raise ExportError(f"{path.name}: '{name}' must be dynamic in batch only, got {got}")
    names = {vi.name for vi in model.graph.input}, {vi.name for vi in model.graph.output}
    return GraphReport(
        op_counts=dict(sorted(op_counts.items())),
        inputs={n: shapes[n] for n in sorted(names[0])},
        outputs={n: shapes[n] for n in sorted(names[1])},
    )


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)


def _check_topk_constant(model: onnx.ModelProto) -> None:
    """TopK's K must be an initializer or Constant, never computed at run time."""
    constants = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = node
    for node in model.graph.node:
        if node.op_type == "TopK" and node.input[1] not in constants:
            raise ExportError(f"TopK node '{node.name}' has a data-dependent K ({node.input[1]})")


def check_qdq_placement(model: onnx.ModelProto) -> int:
    """Q/DQ where TensorRT and VisionZip need them; raise ExportError, else return the weight count.

    - every weight (a DequantizeLinear of an initializer) is quantized per channel:
      a 1-D scale and an `axis`;
    - no QuantizeLinear/DequantizeLinear feeds or is fed by a selection op or Softmax
      (FLOAT_ONLY_OPS): the choice of tokens and the attention probabilities stay float;
    - TopK's K is still a constant.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    weights = 0
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            scale = initializers.get(node.input[1])
            has_axis = any(attr.name == "axis" for attr in node.attribute)
            if scale is None or len(scale.dims) != 1 or not has_axis:
                raise ExportError(
                    f"weight {node.input[0]} is not quantized per channel "
                    f"(DequantizeLinear '{node.name}' needs a 1-D scale and an axis)"
                )
            weights += 1
    if not weights:
        raise ExportError("the graph has no quantized weights (no DequantizeLinear of an initializer)")
    for node in graph.node:
        for name in node.input:
            before = producer.get(name)
            if before is None:
                continue
            pair = {before.op_type, node.op_type}
            if pair & QDQ_OPS and pair & FLOAT_ONLY_OPS:
                touched = (pair & FLOAT_ONLY_OPS).pop()
                raise ExportError(
                    f"{before.op_type} '{before.name}' feeds {node.op_type} "
                    f"'{node.name}': no Q/DQ may touch {touched} (the token "
                    "selection and attention probabilities stay float)"
                )
    _check_topk_constant(model)
    return weights
