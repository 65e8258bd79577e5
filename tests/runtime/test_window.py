"""`zipvlm stream --window N` (video mode): the last N frames' tokens asked about together."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import reference_model
from images import photo
from reference import reference_visionzip

from zipvlm.cli.main import main
from zipvlm.runtime.generation import GenerationOptions
from zipvlm.runtime.pipeline import BundlePipeline
from zipvlm.runtime.preprocess import preprocess
from zipvlm.runtime.stream import FrameWindow

QUESTION = "What changed?"
EXPLICIT = "USER: <image>\n<image>\n<image>\nWhat changed? ASSISTANT:"  # the tiny LLaVA-1.5 template


@pytest.fixture(scope="module")
def pipeline(tiny_bundles):
    return BundlePipeline.open(tiny_bundles["clip-llama"])


def frames() -> list[np.ndarray]:
    return [photo(240, 320, seed=seed) for seed in range(4)]


def test_the_window_prompt_equals_an_explicit_multi_image_prompt(pipeline):
    window = FrameWindow(pipeline, size=3)
    for frame in frames():  # four frames: the oldest falls out
        window.add(frame)
    ids = window.prompt_ids(QUESTION)
    assert ids == pipeline.prompts.encode(EXPLICIT, images=3)
    assert ids.count(pipeline.prompts.spec.image_token_id) == 3 * 64


def test_the_window_answer_equals_hf_fed_the_last_three_frames(pipeline, tiny_folders):
    window = FrameWindow(pipeline, size=3)
    for frame in frames():
        window.add(frame)
    answer = window.ask(QUESTION, GenerationOptions(max_new_tokens=16))
    assert answer.num_image_tokens == 3 * 64

    model = reference_model(tiny_folders["clip-llama"])
    pixel_values = torch.from_numpy(
        np.concatenate([preprocess(frame, pipeline.bundle.preprocess) for frame in frames()[1:]])
    )
    reference = reference_visionzip(model, pixel_values, 54, 10).image_embeds  # (3, 64, H)
    ids = torch.tensor([pipeline.prompts.encode(EXPLICIT, images=3)])
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        mask = (ids == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(mask, reference.to(embeds.dtype))
        want = model.generate(
            inputs_embeds=embeds, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False
        )[0].tolist()
    assert len(answer.token_ids) >= 12
    assert answer.token_ids == [t for t in want if t not in pipeline.eos_ids][: len(answer.token_ids)]


def test_window_must_be_at_least_one(tiny_bundles, capsys):
    code = main(
        [
            "stream",
            "--bundle",
            str(tiny_bundles["clip-llama"]),
            "--source",
            "synthetic",
            "--prompt",
            "Hi?",
            "--window",
            "0",
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == "zipvlm stream: error: --window must be at least 1, got 0"


def test_stream_with_a_window_asks_about_up_to_n_frames(tiny_bundles, capsys):
    import json

    assert (
        main(
            [
                "stream",
                "--bundle",
                str(tiny_bundles["clip-llama"]),
                "--source",
                "synthetic",
                "--prompt",
                "What moves?",
                "--window",
                "3",
                "--max-frames",
                "4",
                "--max-new-tokens",
                "2",
                "--json",
            ]
        )
        == 0
    )
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["num_image_tokens"] for a in answers] == [64, 128, 192, 192]
