"""Prompt ids equal what the Hugging Face LlavaProcessor gives, with K image positions."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from bundles import sample_bundle
from conftest import FAMILIES

from zipvlm.bundle.format import LanguageSection
from zipvlm.models.tiny import CORPUS
from zipvlm.runtime.prompt import PromptBuilder, PromptError

FULL_TOKENS = 576  # what the processor expands the image token to for these towers


def builder(folder, num_image_tokens):
    config = json.loads((folder / "config.json").read_text())
    image_token_id = config.get("image_token_id", config.get("image_token_index"))
    language = LanguageSection(
        config["text_config"]["model_type"],
        64,
        image_token_id,
        (),
        (folder / "chat_template.jinja").read_text(),
    )
    return PromptBuilder(dataclasses.replace(sample_bundle(folder), language=language), num_image_tokens)


@pytest.fixture(scope="module")
def processors(tiny_folders):
    from transformers import AutoProcessor

    return {family: AutoProcessor.from_pretrained(folder) for family, folder in tiny_folders.items()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("question", ["What is in the image?", CORPUS[2], "Ünïcode 🚗 ok?"])
def test_chat_prompt_ids_equal_the_hf_processor(tiny_folders, processors, family, question):
    from PIL import Image

    processor = processors[family]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.fromarray(np.zeros((336, 336, 3), np.uint8))
    want = processor(images=image, text=text, return_tensors="np")["input_ids"][0].tolist()
    ours = builder(tiny_folders[family], FULL_TOKENS)
    assert ours.chat_text(question) == text
    assert ours.encode(ours.chat_text(question)) == want


@pytest.mark.parametrize("family", FAMILIES)
def test_image_token_becomes_k_positions(tiny_folders, family):
    ours = builder(tiny_folders[family], 64)
    ids = ours.encode(ours.chat_text("Describe the scene."))
    image_id = ours.spec.image_token_id
    assert ids.count(image_id) == 64
    first = ids.index(image_id)
    assert ids[first : first + 64] == [image_id] * 64


def test_raw_prompt_is_tokenised_verbatim(tiny_folders):
    ours = builder(tiny_folders["clip-llama"], 3)
    ids = ours.encode("<image>\nIs the door open?")
    expected = ours.tokenizer.encode("\nIs the door open?", add_special_tokens=False).ids
    assert ids == [ours.spec.image_token_id] * 3 + expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Is the door open?", "exactly one image token <image>, found 0"),
        ("<image> and <image>", "exactly one image token <image>, found 2"),
        ("   ", "the prompt is empty"),
    ],
)
def test_bad_raw_prompts_are_refused(tiny_folders, text, message):
    with pytest.raises(PromptError, match=message):
        builder(tiny_folders["clip-llama"], 64).encode(text)


def test_empty_question_is_refused(tiny_folders):
    with pytest.raises(PromptError, match="empty"):
        builder(tiny_folders["siglip-qwen2"], 64).chat_text("")
