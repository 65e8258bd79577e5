"""The bundle's language side: greedy tokens equal Hugging Face fed with the reference embeddings."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import FAMILIES, pixels, reference_model
from reference import reference_visionzip

from zipvlm.bundle.format import Bundle
from zipvlm.export.pipeline import ExportOptions, export_bundle
from zipvlm.runtime.prompt import PromptBuilder

NEW_TOKENS = 16
QUESTION = "What is in the image?"


def prompt_ids(bundle) -> list[int]:
    builder = PromptBuilder(Bundle.open(bundle))
    return builder.encode(builder.chat_text(QUESTION))


def genai_greedy(bundle, ids: list[int], image_embeds: np.ndarray) -> list[int]:
    import onnxruntime_genai as og

    model = og.Model(str(bundle))
    params = og.GeneratorParams(model)
    params.set_search_options(
        max_length=len(ids) + NEW_TOKENS, min_length=len(ids) + NEW_TOKENS, do_sample=False
    )
    generator = og.Generator(model, params)
    visual = np.ascontiguousarray(image_embeds, dtype=np.float32)  # must outlive the generator
    generator.set_model_input("visual_embeds", visual)
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


def hf_greedy(model, ids: list[int], image_embeds: torch.Tensor) -> list[int]:
    """LlavaForConditionalGeneration's own placement of image features, then greedy decoding."""
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        embeds = model.get_input_embeddings()(input_ids)
        mask = (input_ids == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(mask, image_embeds.to(embeds.dtype))
        out = model.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    return out[0].tolist()


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
    model = reference_model(tiny_folders[family])
    with torch.no_grad():
        want = model.generate(
            input_ids=torch.tensor([ids]),
            pixel_values=images,
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        )[0, len(ids) :].tolist()
    assert genai_greedy(bundle, ids, image_embeds) == want
