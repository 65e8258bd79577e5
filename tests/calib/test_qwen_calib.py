"""The Qwen2.5-VL bundle through `zipvlm calib` (INT8 Q/DQ vision graph) and `zipvlm engine`'s checks."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import onnx
import pytest

from zipvlm.bundle.format import INT8_GRAPH, Bundle
from zipvlm.bundle.graph_checks import QDQ_OPS, check_qdq_placement, check_vision_graph
from zipvlm.calib.collect import CollectOptions, collect
from zipvlm.calib.selection import constant_names, float_nodes, is_weight_layer
from zipvlm.cli.main import main
from zipvlm.runtime.generation import GenerationOptions
from zipvlm.runtime.pipeline import BundlePipeline

pytestmark = pytest.mark.slow  # quantizes a real bundle


@pytest.fixture(scope="module")
def quantized(qwen_bundles, tmp_path_factory):
    """A copy of the VisionZip bundle quantized through the CLI on 12 synthetic 640x480 frames."""
    root = tmp_path_factory.mktemp("qwen-int8")
    collect(CollectOptions("synthetic", 12, root / "frames"))
    bundle = shutil.copytree(qwen_bundles["zip"], root / "bundle")
    assert main(["calib", "quantize", "--bundle", str(bundle), "--frames", str(root / "frames")]) == 0
    return bundle


def upstream_of_decisions(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Every node TopK or ArgMax depends on, back to the weight layers (what chooses the tokens)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    constants = constant_names(model.graph)
    stack = [node for node in model.graph.node if node.op_type in ("TopK", "ArgMax")]
    seen: dict[str, onnx.NodeProto] = {}
    while stack:
        node = stack.pop()
        if node.name in seen or is_weight_layer(node, constants):
            continue
        seen[node.name] = node
        stack.extend(producer[name] for name in node.input if name in producer)
    return list(seen.values())


def test_the_int8_graph_keeps_the_contract_and_the_report(quantized):
    bundle = Bundle.open(quantized)
    check_vision_graph(bundle.file(INT8_GRAPH), bundle.vision_io(), extra_ops=QDQ_OPS)
    report = json.loads((quantized / "reports" / "int8.json").read_text())
    assert report["frames"] == {**report["frames"], "calibration": 9, "held_out": 3}
    assert 0 < report["keep_iou"]["mean"] <= 1 and report["cosine"]["mean"] > 0.9


def test_the_probe_blocks_attention_and_the_selection_stay_float(quantized):
    model = onnx.load(str(quantized / "vision.onnx"), load_external_data=False)
    chooses = upstream_of_decisions(model)
    kinds = {node.op_type for node in chooses}
    assert {"Softmax", "MatMul", "ReduceSum", "TopK", "ArgMax"} <= kinds  # q kᵀ, its softmax, the scores
    assert {node.name for node in chooses} <= set(float_nodes(model))
    int8 = onnx.load(str(quantized / INT8_GRAPH), load_external_data=False)
    weights = check_qdq_placement(int8)
    assert weights >= 4 * 4 + 2  # qkv, proj and the MLP of every block, and the merger
    producer = {out: node.op_type for node in int8.graph.node for out in node.output}
    names = {node.name for node in chooses}
    for node in int8.graph.node:
        if node.name in names:
            assert not {producer.get(name) for name in node.input} & QDQ_OPS, node.name


def test_the_runtime_answers_with_the_int8_graph(quantized):
    pipeline = BundlePipeline.open(quantized, vision_graph="int8")
    frame = np.full((480, 640, 3), 90, np.uint8)
    answer = pipeline.ask(frame, pipeline.prompt_ids("What is it?", None), GenerationOptions(4))
    assert answer.num_image_tokens == 43 and len(answer.token_ids) >= 1


def test_engine_checks_the_graph_and_says_where_to_build(qwen_bundles, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # absent even where it is installed
    bundle = shutil.copytree(qwen_bundles["zip"], tmp_path / "bundle")
    assert main(["engine", "--bundle", str(bundle), "--target", "x86"]) == 2
    assert "TensorRT is not installed here" in capsys.readouterr().err
    text = (bundle / "engines" / "vision.x86.report.txt").read_text()
    assert "static shapes but batch: passed" in text
    assert "inputs:  pixel_values ['batch', 3, 476, 644]" in text
    assert "outputs: image_embeds ['batch', 43, 64], keep_indices ['batch', 36]" in text
