"""The exported vision.onnx, run in onnxruntime, equals the reference; its ops are TensorRT-safe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from cases import cases_for
from conftest import FAMILIES, pixels, reference_model
from reference import reference_visionzip

from zipvlm.bundle.errors import ExportError
from zipvlm.bundle.graph_checks import FORBIDDEN_OPS, check_vision_graph
from zipvlm.export.fp16 import convert_to_fp16, verify_fp16
from zipvlm.export.llava import HALF_SCOPES
from zipvlm.export.verify import run_onnx, verify_against_torch
from zipvlm.export.vision import export_vision_graph
from zipvlm.models.llava import load_vision_graph, open_llava_folder
from zipvlm.models.visionzip import VisionZipConfig

ATOL = 1e-4
ALL_CASES = [(family, d, c) for family in FAMILIES for d, c in cases_for(family)]


def export(folder: Path, dominant: int, contextual: int, out: Path):
    graph = load_vision_graph(open_llava_folder(folder), VisionZipConfig(dominant, contextual))
    return graph, export_vision_graph(graph, (336, 336), out / "vision.onnx")


@pytest.mark.parametrize(("family", "dominant", "contextual"), ALL_CASES)
def test_onnxruntime_matches_reference(tiny_folders, tmp_path, family, dominant, contextual):
    _, path = export(tiny_folders[family], dominant, contextual, tmp_path)
    images = pixels(3, seed=100 + dominant)
    embeds, keep = run_onnx(path, images.numpy())
    ref = reference_visionzip(reference_model(tiny_folders[family]), images, dominant, contextual)
    assert keep.dtype == np.int64
    assert keep.tolist() == ref.keep_indices
    np.testing.assert_allclose(embeds, ref.image_embeds.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_onnxruntime_breaks_ties_like_the_reference(tied_folders, tmp_path, family):
    _, path = export(tied_folders[family], 54, 10, tmp_path)
    images = pixels(2, seed=5)
    embeds, keep = run_onnx(path, images.numpy())
    ref = reference_visionzip(reference_model(tied_folders[family]), images, 54, 10)
    assert keep.tolist() == ref.keep_indices == [list(range(54))] * 2
    np.testing.assert_allclose(embeds, ref.image_embeds.numpy(), atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def exported(tiny_folders, tmp_path_factory):
    """One exported graph per family with the paper's (54, 10)."""
    out = {}
    for family in FAMILIES:
        out[family] = export(tiny_folders[family], 54, 10, tmp_path_factory.mktemp(family))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_graph_uses_only_tensorrt_safe_ops_with_constant_topk(exported, family):
    _, path = exported[family]
    model = onnx.load(str(path))
    ops = {node.op_type for node in model.graph.node}
    assert not ops & FORBIDDEN_OPS
    assert {"TopK", "ScatterElements", "GatherElements", "ArgMax"} <= ops
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    topk_ks = sorted(int(initializers[n.input[1]][0]) for n in model.graph.node if n.op_type == "TopK")
    tokens = 577 if family == "clip-llama" else 576
    assert topk_ks == [54, tokens]
    assert model.opset_import[0].version == 18


@pytest.mark.parametrize("family", FAMILIES)
def test_graph_is_static_but_batch_and_runs_batches_1_and_5(exported, family):
    _, path = exported[family]
    report = check_vision_graph(path, {"image_embeds": [None, 64, 64], "keep_indices": [None, 54]})
    assert report.inputs == {"pixel_values": ["batch", 3, 336, 336]}
    assert report.outputs == {"image_embeds": ["batch", 64, 64], "keep_indices": ["batch", 54]}
    for batch in (1, 5):
        embeds, keep = run_onnx(path, pixels(batch, seed=batch).numpy())
        assert embeds.shape == (batch, 64, 64) and keep.shape == (batch, 54)


def test_check_rejects_forbidden_ops(tmp_path):
    node = onnx.helper.make_node("NonZero", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64, [1, None])],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), path)
    with pytest.raises(ExportError, match="NonZero"):
        check_vision_graph(path, {})


def test_verify_reports_max_difference_and_equal_indices(exported):
    graph, path = exported["siglip-qwen2"]
    result = verify_against_torch(graph, path, pixels(2, seed=9))
    assert result.indices_equal and result.max_abs_diff < ATOL


@pytest.mark.parametrize("family", FAMILIES)
def test_fp16_graph_stays_within_stated_tolerance(exported, tmp_path, family):
    _, path = exported[family]
    half = convert_to_fp16(path, tmp_path / "vision.fp16.onnx", HALF_SCOPES)
    result = verify_fp16(path, half, pixels(2, seed=4).numpy())
    assert result.keep_iou >= 0.9 and result.cosine >= 0.99
    onnx.checker.check_model(str(half), full_check=True)  # topologically sorted, as TensorRT reads it
    model = onnx.load(str(half))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
