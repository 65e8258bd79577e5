"""Greedy decoding both ways: the bundle through onnxruntime-genai, and Hugging Face's own model."""

from __future__ import annotations

import numpy as np
import torch

from zipvlm.bundle.format import Bundle
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


def hf_generate(model, ids: list[int], **images) -> list[int]:
    """The model's own generate on prompt ids (image tokens already expanded) and its image
    inputs (pixel_values, image_sizes; none for text only): the new ids."""
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            **images,
        )
    return out[0, len(ids) :].tolist()
