"""Any-res bundles (LLaVA-NeXT, LLaVA-OneVision) exported for a 640x480 camera, against the references.

- vision.onnx in onnxruntime: kept indices per view equal the slow reference's, features within
  1e-4, rows in the reference's order; static [B, V, 3, S, S] input, TensorRT-safe ops;
- with VisionZip, greedy ids through onnxruntime-genai equal transformers' language model fed
  the reference's embeddings;
- with --no-zip, the graph equals transformers' get_image_features and greedy ids equal
  transformers' own generate.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import onnx
import pytest
import torch
from conftest import ANYRES, ANYRES_ZIP, CAMERA, reference_model
from greedy import NEW_TOKENS, genai_greedy, hf_generate, hf_greedy, prompt_ids
from images import photo
from reference_anyres import reference_anyres_visionzip

from zipvlm.bundle.format import Bundle
from zipvlm.bundle.graph_checks import check_vision_graph
from zipvlm.export.family import open_family
from zipvlm.export.verify import run_onnx
from zipvlm.export.vision import export_vision_graph
from zipvlm.runtime.preprocess import pixel_values

pytestmark = pytest.mark.slow  # exports any-res bundles

ATOL = 1e-4
DOMINANT, CONTEXTUAL = ANYRES_ZIP


def frames_pixels(bundle: Bundle, seeds: tuple[int, ...]) -> np.ndarray:
    """(len(seeds), V, 3, S, S): camera frames through the runtime's preprocessing."""
    return np.concatenate([pixel_values(photo(CAMERA[1], CAMERA[0], seed=seed), bundle) for seed in seeds])


@pytest.fixture(scope="module")
def models(anyres_folders):
    return {name: reference_model(folder) for name, folder in anyres_folders.items()}


@pytest.fixture(scope="module")
def full_bundles(anyres_bundles, anyres_folders, tmp_path_factory):
    """The --no-zip bundle of each folder: what `export --no-zip` writes, with the decoder of the
    VisionZip bundle (the language side does not depend on the selection)."""
    out = {}
    for name, folder in anyres_folders.items():
        target = tmp_path_factory.mktemp("full") / name
        shutil.copytree(anyres_bundles[name], target)
        family = open_family(folder, CAMERA)
        export_vision_graph(family.vision_graph(None), family.input_hw, target / "vision.onnx", family.views)
        full = family.describe(target, None, [], {})
        zipped = Bundle.open(anyres_bundles[name])
        dataclasses.replace(zipped, path=target, selection=full.selection, anyres=full.anyres).write()
        out[name] = target
    return out


@pytest.mark.parametrize("name", ANYRES)
def test_the_graph_keeps_what_the_reference_keeps_per_view_in_the_same_order(anyres_bundles, models, name):
    bundle = Bundle.open(anyres_bundles[name])
    pixels = frames_pixels(bundle, (1, 2))
    embeds, keep = run_onnx(bundle.file("vision.onnx"), pixels)
    assert keep.shape == (2, 5, DOMINANT) and embeds.shape == (2, 5 * (DOMINANT + CONTEXTUAL), 64)
    for image in range(2):
        ref = reference_anyres_visionzip(
            models[name], torch.from_numpy(pixels[image]), bundle.anyres.grid[1], DOMINANT, CONTEXTUAL
        )
        assert keep[image].tolist() == ref.keep_indices
        np.testing.assert_allclose(embeds[image], ref.image_embeds.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ANYRES)
def test_the_graph_is_static_but_batch_and_tensorrt_safe(anyres_bundles, name):
    bundle = Bundle.open(anyres_bundles[name])
    side = bundle.vision.image_size
    report = check_vision_graph(bundle.file("vision.onnx"), bundle.vision_io())
    assert report.inputs == {"pixel_values": ["batch", 5, 3, side, side]}
    assert report.outputs == {"image_embeds": ["batch", 320, 64], "keep_indices": ["batch", 5, DOMINANT]}
    assert report.op_counts["TopK"] == 2  # VisionZip's own; the layout orders by CumSum
    assert {"CumSum", "ScatterElements", "GatherElements"} <= set(report.op_counts)
    model = onnx.load(str(bundle.file("vision.onnx")))
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    topk = sorted(int(initializers[n.input[1]][0]) for n in model.graph.node if n.op_type == "TopK")
    assert topk == [DOMINANT, bundle.vision.num_tokens]
    for batch in (1, 3):
        embeds, keep = run_onnx(bundle.file("vision.onnx"), frames_pixels(bundle, tuple(range(batch))))
        assert embeds.shape == (batch, 320, 64) and keep.shape == (batch, 5, DOMINANT)


@pytest.mark.parametrize("name", ANYRES)
def test_greedy_ids_equal_transformers_fed_the_reference_embeddings(anyres_bundles, models, name):
    bundle = Bundle.open(anyres_bundles[name])
    pixels = frames_pixels(bundle, (3,))
    embeds, _ = run_onnx(bundle.file("vision.onnx"), pixels)
    ref = reference_anyres_visionzip(
        models[name], torch.from_numpy(pixels[0]), bundle.anyres.grid[1], DOMINANT, CONTEXTUAL
    )
    ids = prompt_ids(bundle.path)
    ours = genai_greedy(bundle.path, ids, embeds)
    assert len(ours) == NEW_TOKENS
    assert ours == hf_greedy(models[name], ids, ref.image_embeds)
    # the check has power: the same rows in another order give another answer
    assert hf_greedy(models[name], ids, ref.image_embeds.flip(0)) != ours


@pytest.mark.parametrize("name", ANYRES)
def test_no_zip_graph_is_transformers_and_greedy_ids_equal_its_generate(full_bundles, models, name):
    bundle = Bundle.open(full_bundles[name])
    pixels = frames_pixels(bundle, (4,))
    embeds, keep = run_onnx(bundle.file("vision.onnx"), pixels)
    model = models[name]
    image_sizes = torch.tensor([[CAMERA[1], CAMERA[0]]])
    with torch.no_grad():
        want = model.model.get_image_features(
            pixel_values=torch.from_numpy(pixels), image_sizes=image_sizes
        ).pooler_output[0]
    assert embeds.shape[1] == want.shape[0] == bundle.selection.num_image_tokens  # 2340 / 2929
    np.testing.assert_allclose(embeds[0], want.numpy(), atol=1e-5, rtol=0)
    assert keep.shape == (1, 5, bundle.anyres.kept_per_view)
    ids = prompt_ids(bundle.path)
    generated = hf_generate(model, ids, pixel_values=torch.from_numpy(pixels), image_sizes=image_sizes)
    assert genai_greedy(bundle.path, ids, embeds) == generated


def test_the_fp16_graph_keeps_the_views_within_the_stated_tolerance(anyres_bundles, tmp_path):
    from zipvlm.export.fp16 import FP16_TOLERANCE, convert_to_fp16, verify_fp16
    from zipvlm.export.llava import HALF_SCOPES
    from zipvlm.runtime.agreement import kept_rows

    bundle = Bundle.open(anyres_bundles["llava-next"])
    half = convert_to_fp16(bundle.file("vision.onnx"), tmp_path / "vision.fp16.onnx", HALF_SCOPES)
    check_vision_graph(half, bundle.vision_io())
    result = verify_fp16(
        bundle.file("vision.onnx"), half, frames_pixels(bundle, (5, 6)), rows=kept_rows(bundle)
    )
    assert result.keep_iou >= FP16_TOLERANCE.keep_iou and result.cosine >= FP16_TOLERANCE.cosine
