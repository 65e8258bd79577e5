"""The bundle's language side: greedy tokens equal Hugging Face fed with the reference embeddings."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FAMILIES, pixels, reference_model
from greedy import NEW_TOKENS, genai_greedy, hf_generate, hf_greedy, prompt_ids
from reference import reference_visionzip

from zipvlm.bundle.format import Bundle
from zipvlm.export.pipeline import ExportOptions, export_bundle


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_equal_hf_with_reference_embeddings(tiny_bundles, tiny_folders, family):
    bundle = tiny_bundles[family]
    images = pixels(1, seed=21)
    session = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    image_embeds, _ = session.run(None, {"pixel_values": images.numpy()})
    model = reference_model(tiny_folders[family])
    reference = reference_visionzip(model, images, 54, 10)
    ids = prompt_ids(bundle)
    ours = genai_greedy(bundle, ids, image_embeds)
    assert len(ours) == NEW_TOKENS
    assert ours == hf_greedy(model, ids, reference.image_embeds)


def test_decoder_takes_embeddings_and_kv_cache_and_runs_in_plain_onnxruntime(tiny_bundles):
    bundle = tiny_bundles["clip-llama"]
    graph = onnx.load(str(bundle / "decoder.onnx"), load_external_data=False)
    inputs = {i.name for i in graph.graph.input}
    assert {"inputs_embeds", "attention_mask", "past_key_values.0.key"} <= inputs
    assert "input_ids" not in inputs
    session = ort.InferenceSession(str(bundle / "decoder.onnx"), providers=["CPUExecutionProvider"])
    feed = {}
    for spec in session.get_inputs():
        if spec.name == "inputs_embeds":
            feed[spec.name] = np.zeros((1, 3, 64), np.float32)
        elif spec.name == "attention_mask":
            feed[spec.name] = np.ones((1, 3), np.int64)
        else:  # empty past: (batch, kv heads, 0, head size)
            feed[spec.name] = np.zeros((1, 2, 0, 16), np.float32)
    logits = session.run(["logits"], feed)[0]
    assert logits.shape[:2] == (1, 3) and np.isfinite(logits).all()


def test_manifest_lists_the_language_graphs(tiny_bundles):
    bundle = Bundle.open(tiny_bundles["siglip-qwen2"])
    assert bundle.graphs["decoder.onnx"]["quantization"] == "none"
    assert {"decoder.onnx", "embed.onnx", "genai_config.json"} <= set(bundle.files)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_no_zip_bundle_equals_plain_hf_generate(tiny_folders, tmp_path, family):
    """The full-token baseline runs the same code and gives HF's own answer."""
    bundle = export_bundle(
        ExportOptions(model=tiny_folders[family], out=tmp_path / "full", zip=None, quant="none")
    ).out
    selection = Bundle.open(bundle).selection
    assert selection.enabled is False
    assert selection.num_image_tokens == 576  # CLIP drops CLS; SigLIP has none
    images = pixels(1, seed=8)
    session = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    image_embeds, keep = session.run(None, {"pixel_values": images.numpy()})
    assert keep.tolist() == [
        list(range(1 if family == "clip-llama" else 0, 577 if family == "clip-llama" else 576))
    ]
    ids = prompt_ids(bundle)
    want = hf_generate(reference_model(tiny_folders[family]), ids, pixel_values=images)
    assert genai_greedy(bundle, ids, image_embeds) == want


@pytest.mark.slow
def test_a_mistral_sliding_window_is_kept_by_the_decoder(tmp_path):
    """onnxruntime-genai's builder windows only layers typed 'sliding_attention', and Mistral configs
    have no layer types: the export writes them, so a prompt longer than the window decodes as
    transformers decodes it."""
    from transformers import AutoModelForImageTextToText

    from zipvlm.export.decoder import export_language
    from zipvlm.models.llava import open_llava_folder
    from zipvlm.models.tiny import TinySpec, build_tiny_llava

    window = 16
    spec = TinySpec(
        family="clip-mistral", architecture="llava_next", sliding_window=window, language_std=0.25
    )
    folder = build_tiny_llava(tmp_path / "model", spec)
    export_language(open_llava_folder(folder), tmp_path, "none", [2])
    graph = onnx.load(str(tmp_path / "decoder.onnx"), load_external_data=False)
    windows = [
        onnx.helper.get_attribute_value(attr)
        for node in graph.graph.node
        if node.op_type == "GroupQueryAttention"
        for attr in node.attribute
        if attr.name == "local_window_size"
    ]
    assert windows == [window] * spec.text_layers
    ids = [1, *range(10, 50)]  # 41 tokens: more than two windows, no image
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    want = hf_generate(model, ids)
    assert genai_greedy(tmp_path, ids, np.zeros((1, 1, spec.text_width), np.float32)) == want
    model.config.text_config.sliding_window = None  # the check has power: unwindowed, another answer
    assert hf_generate(model, ids) != want
