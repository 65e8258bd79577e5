"""`--fp16`: a half-precision vision graph whose token selection stays in float32.

The layers that do not produce the selection's signals run in float16 (LLaVA:
the embeddings, the layers before L and the projector; Qwen2.5-VL: every block
but the probe block, and the merger); the layer that produces the attention
scores and keys and VisionZip stay in float32, because float16 scores tie and
reorder far more often. Inputs and
outputs stay float32, so the runtime feeds both graphs the same way. The
converter appends its input casts after their readers and leaves the old
float32 types of converted tensors in value_info: the nodes are sorted again
and value_info dropped, since onnx.checker and TensorRT's parser need
topological order and consistent types.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from zipvlm.bundle.errors import VerificationError
from zipvlm.export.onnx_io import save_model
from zipvlm.export.verify import run_onnx
from zipvlm.runtime.agreement import KeptRows, dominant_rows, keep_iou, shared_token_cosine

SCOPE_KEY = "pkg.torch.onnx.name_scopes"


@dataclass(frozen=True)
class Fp16Tolerance:
    keep_iou: float  # mean IoU of kept index sets, float16 vs float32 graph
    cosine: float  # lowest per-image cosine of the dominant tokens both graphs kept


FP16_TOLERANCE = Fp16Tolerance(keep_iou=0.9, cosine=0.99)


@dataclass(frozen=True)
class Fp16Result:
    keep_iou: float
    cosine: float


def _runs_in_half(node: onnx.NodeProto, half_scopes: tuple[str, ...]) -> bool:
    """Whether the exporter's node metadata puts `node` inside one of the module scopes."""
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            scopes = ast.literal_eval(prop.value)
            return any(scope.startswith(half_scopes) for scope in scopes)
    return False


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder `graph.node` so every node follows the producers of its inputs (stable otherwise)."""
    ready = {value.name for value in graph.input} | {init.name for init in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            missing = sorted({n for node in waiting for n in node.input if n not in ready})[:3]
            raise VerificationError(f"the graph has a cycle or undefined inputs: {', '.join(missing)}")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)


def convert_to_fp16(source: Path, target: Path, half_scopes: tuple[str, ...]) -> Path:
    """Write `target`: `source` with the nodes of the modules in `half_scopes` converted to
    float16 (the family's layers before its selection's signals, and after it)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    keep_float = [node.name for node in model.graph.node if not _runs_in_half(node, half_scopes)]
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep_float)
    sort_topologically(half.graph)
    del half.graph.value_info[:]  # stale float32 types of converted tensors; shape inference redoes them
    return save_model(half, target)


def verify_fp16(
    float_path: Path,
    half_path: Path,
    pixels: np.ndarray,
    tolerance: Fp16Tolerance = FP16_TOLERANCE,
    rows: KeptRows = dominant_rows,
) -> Fp16Result:
    """Compare the float16 graph with the float32 one; raise VerificationError below tolerance.
    `rows` says where each kept token sits in image_embeds (runtime/agreement.py)."""
    ref_embeds, ref_keep = run_onnx(float_path, pixels)
    half_embeds, half_keep = run_onnx(half_path, pixels)
    pairs = list(zip(ref_embeds, ref_keep, half_embeds, half_keep, strict=True))
    result = Fp16Result(
        keep_iou=float(np.mean([keep_iou(a, b, rows) for _, a, _, b in pairs])),
        cosine=min(shared_token_cosine(*pair, rows=rows) for pair in pairs),
    )
    if result.keep_iou < tolerance.keep_iou or result.cosine < tolerance.cosine:
        raise VerificationError(
            f"float16 graph drifts from float32: kept-index IoU {result.keep_iou:.3f} "
            f"(needs {tolerance.keep_iou}), cosine {result.cosine:.4f} (needs {tolerance.cosine})"
        )
    return result
