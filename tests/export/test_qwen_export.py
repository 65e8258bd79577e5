"""`zipvlm export` of a Qwen2.5-VL folder: the bundle, its static vision graph against the references,
and one line for what it cannot take."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import QWEN_ZIP
from images import photo
from reference_qwen import NEAR_TIE, probe_tower, reference_selection

from zipvlm.bundle.format import POSITIONS_GRAPH, Bundle
from zipvlm.bundle.graph_checks import FORBIDDEN_OPS
from zipvlm.cli.main import main
from zipvlm.export.fp16 import convert_to_fp16, verify_fp16
from zipvlm.export.qwen import QwenExport
from zipvlm.export.verify import run_onnx
from zipvlm.runtime.preprocess import pixel_values

pytestmark = pytest.mark.slow  # exports real bundles
ATOL = 1e-4


@pytest.fixture(scope="module")
def model(qwen_folder):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_folder, attn_implementation="eager").eval()


def frames(bundle: Bundle, seeds=(5, 6)) -> np.ndarray:
    qwen = bundle.qwen
    shots = [photo(qwen.camera_height, qwen.camera_width, seed=seed) for seed in seeds]
    return np.concatenate([pixel_values(shot, bundle) for shot in shots])


def test_the_bundle_records_the_grid_the_positions_and_the_graph_contract(qwen_bundles):
    bundle = Bundle.open(qwen_bundles["zip"])
    qwen = bundle.qwen
    assert (qwen.camera_width, qwen.camera_height, qwen.image_width, qwen.image_height) == (
        640,
        480,
        644,
        476,
    )
    assert (qwen.grid.merged_w, qwen.grid.merged_h, qwen.probe_block, qwen.mrope_section) == (
        23,
        17,
        3,
        (2, 3, 3),
    )
    assert (qwen.min_pixels, qwen.max_pixels) == (56 * 56, 28 * 28 * 1280)
    assert bundle.vision_io() == {
        "pixel_values": [None, 3, 476, 644],
        "image_embeds": [None, 43, 64],
        "keep_indices": [None, 36],
    }
    assert bundle.has(POSITIONS_GRAPH) and "mrope_position_ids" in bundle.graphs["decoder.onnx"]["inputs"]
    genai = json.loads((bundle.path / "genai_config.json").read_text())["model"]
    assert list(genai["decoder"]["pipeline"][0]) == ["embed", "positions", "decoder"]
    full = Bundle.open(qwen_bundles["nozip"])
    assert (full.qwen.image_width, full.qwen.image_height, full.selection.num_image_tokens) == (448, 448, 256)
    assert full.vision_io()["keep_indices"] == [None, 256]


@pytest.mark.parametrize("which", ["zip", "nozip"])
def test_the_graph_is_static_and_tensorrt_safe(qwen_bundles, which):
    model = onnx.load(str(qwen_bundles[which] / "vision.onnx"), load_external_data=False)
    ops = {node.op_type for node in model.graph.node}
    assert not ops & FORBIDDEN_OPS
    assert ("TopK" in ops) == (which == "zip")
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input]
    assert dims == ([["batch", 3, 476, 644]] if which == "zip" else [["batch", 3, 448, 448]])


def test_every_merged_token_equals_transformers_in_onnxruntime(qwen_bundles, model):
    bundle = Bundle.open(qwen_bundles["nozip"])
    pixels = frames(bundle)
    embeds, keep = run_onnx(bundle.file("vision.onnx"), pixels)
    assert keep.tolist() == [list(range(256))] * 2
    for b in range(2):
        np.testing.assert_allclose(embeds[b], probe_tower(model, pixels[b])[2], atol=ATOL, rtol=0)
    one, _ = run_onnx(bundle.file("vision.onnx"), pixels[1:])
    np.testing.assert_allclose(one[0], embeds[1], atol=1e-6, rtol=0)  # batch 1 = row 1 of batch 2


def test_kept_indices_and_features_equal_the_reference_in_onnxruntime(qwen_bundles, model):
    bundle = Bundle.open(qwen_bundles["zip"])
    pixels = frames(bundle, seeds=(7, 8, 9))
    embeds, keep = run_onnx(bundle.file("vision.onnx"), pixels)
    assert keep.dtype == np.int64
    for b in range(len(pixels)):
        ref = reference_selection(*probe_tower(model, pixels[b]), *QWEN_ZIP)
        assert ref.margin > NEAR_TIE, f"image {b}: near tie at rank D ({ref.margin:.1e}); pick another image"
        assert keep[b].tolist() == ref.keep
        np.testing.assert_allclose(embeds[b], ref.tokens, atol=ATOL, rtol=0)


def test_fp16_keeps_the_probe_block_and_the_selection_float(qwen_bundles, qwen_folder, tmp_path):
    bundle = Bundle.open(qwen_bundles["zip"])
    family = QwenExport.open(qwen_folder, (640, 480))
    half = convert_to_fp16(bundle.file("vision.onnx"), tmp_path / "vision.fp16.onnx", family.half_scopes)
    result = verify_fp16(bundle.file("vision.onnx"), half, frames(bundle))
    assert result.keep_iou >= 0.9 and result.cosine >= 0.99
    weights = {init.name: init.data_type for init in onnx.load(str(half)).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in weights.values()  # the other blocks do run in float16


def one_line(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_an_image_size_the_grid_cannot_take_is_one_line(qwen_folder, tmp_path, capsys):
    err = one_line(
        capsys,
        ["export", "--model", str(qwen_folder), "--image-size", "4020x20", "--out", str(tmp_path / "b")],
    )
    assert err == (
        "zipvlm export: error: --image-size 4020x20: the aspect ratio 201 is above 200, which the "
        "model's image processor refuses"
    )
    assert not (tmp_path / "b").exists()


def test_more_tokens_than_the_grid_merges_is_one_line(qwen_folder, tmp_path, capsys):
    argv = ["export", "--model", str(qwen_folder), "--image-size", "448x448", "--out", str(tmp_path / "b")]
    err = one_line(capsys, [*argv, "--dominant", "250", "--contextual", "6"])
    assert err == (
        "zipvlm export: error: --dominant + --contextual must be below the 256 merged tokens of the "
        "448x448 grid (16 x 16), got 250 + 6 = 256; a larger --image-size gives more"
    )


def test_a_folder_of_another_architecture_is_one_line(qwen_folder, tmp_path, capsys):
    config = json.loads((qwen_folder / "config.json").read_text())
    config["model_type"] = "qwen2_vl"
    (tmp_path / "qwen2-vl").mkdir()
    (tmp_path / "qwen2-vl" / "config.json").write_text(json.dumps(config))
    err = one_line(capsys, ["export", "--model", str(tmp_path / "qwen2-vl"), "--out", str(tmp_path / "b")])
    assert err.startswith(
        f"zipvlm export: error: {tmp_path / 'qwen2-vl'} holds a 'qwen2_vl' model; supported: "
    )
    assert "Qwen2.5-VL ('qwen2_5_vl')" in err and "LLaVA ('llava'" in err


def test_the_positions_stage_follows_the_runtimes_rule(qwen_bundles):
    """positions.onnx (genai's stage) gives every sequence index the position RopePositions gives it."""
    from zipvlm.runtime.mrope import RopePositions
    from zipvlm.runtime.providers import ort_session

    rng = np.random.default_rng(0)
    prompt = np.sort(rng.integers(0, 60, (3, 20)), axis=1).astype(np.int64)
    positions = RopePositions(prompt, next_position=75)
    session = ort_session(qwen_bundles["zip"] / POSITIONS_GRAPH)
    for start, stop in [
        (0, 20),
        (0, 1),
        (12, 20),
        (20, 21),
        (25, 26),
        (18, 30),
    ]:  # prefill, steps, re-prefill
        (got,) = session.run(
            None,
            {
                "position_ids": np.arange(start, stop, dtype=np.int64)[None],
                "prompt_positions": prompt[:, None, :],
                "rope_delta": np.array([[positions.rope_delta]], np.int64),
            },
        )
        np.testing.assert_array_equal(got[:, 0], positions.span(start, stop))
