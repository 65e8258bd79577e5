"""The stream's reused prompt prefix: the KV cache of the text before the first image."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FAMILIES
from images import photo

from zipvlm.bundle.errors import ArgumentError
from zipvlm.runtime.conversation import Session
from zipvlm.runtime.generation import GenerationOptions
from zipvlm.runtime.pipeline import BundlePipeline
from zipvlm.runtime.prefix_cache import next_token
from zipvlm.runtime.stream import FrameWindow

QUESTION = "What is in front of the robot?"


@pytest.fixture(scope="module", params=FAMILIES)
def pipeline(request, tiny_bundles):
    return BundlePipeline.open(tiny_bundles[request.param])


def window_ids(pipeline, image) -> tuple[FrameWindow, list[int]]:
    window = FrameWindow(pipeline, size=1)
    window.add(image)
    return window, window.prompt_ids(QUESTION)


def test_prefill_after_the_prefix_cache_equals_one_whole_prefill(pipeline):
    window, ids = window_ids(pipeline, photo(240, 320, seed=1))
    decoder, visual = pipeline.prefix_generator.decoder, window.frames[0]
    split = ids.index(pipeline.prompts.spec.image_token_id)
    assert split >= 1
    whole, whole_cache = decoder.forward(ids, visual, decoder.empty)
    _, prefix = decoder.forward(ids[:split], visual, decoder.empty)
    rest, rest_cache = decoder.forward(ids[split:], visual, prefix)
    np.testing.assert_allclose(rest, whole, atol=1e-4)
    assert rest_cache.length == whole_cache.length == len(ids)
    np.testing.assert_allclose(rest_cache.values[0].numpy(), whole_cache.values[0].numpy(), atol=1e-5)


def test_stream_answers_equal_genai_sessions_frame_after_frame(pipeline):
    window = FrameWindow(pipeline, size=1)
    options = GenerationOptions(max_new_tokens=12)
    for seed in range(3):
        image = photo(240, 320, seed=seed)
        window.add(image)
        answer = window.ask(QUESTION, options)
        ids = window.prompt_ids(QUESTION)
        want = Session(pipeline, image, options).ask_ids(ids)
        assert answer.token_ids == want.token_ids
        assert answer.text == want.text
        split = ids.index(pipeline.prompts.spec.image_token_id)
        if seed == 0:  # the prefix is prefilled with the first frame, then reused
            assert (answer.prefill_tokens, answer.cached_tokens) == (len(ids), 0)
        else:
            assert (answer.prefill_tokens, answer.cached_tokens) == (len(ids) - split, split)


def test_the_shared_prefix_is_not_changed_by_the_frames_that_use_it(pipeline):
    first, again = photo(240, 320, seed=7), photo(240, 320, seed=8)
    window = FrameWindow(pipeline, size=1)
    options = GenerationOptions(max_new_tokens=10)
    window.add(first)
    before = window.ask(QUESTION, options).token_ids
    window.add(again)
    window.ask(QUESTION, options)
    window.add(first)
    assert window.ask(QUESTION, options).token_ids == before


def test_a_new_question_gets_its_own_prefix(tiny_bundles):
    pipeline = BundlePipeline.open(tiny_bundles["siglip-qwen2"])
    window = FrameWindow(pipeline, size=1)
    window.add(photo(240, 320, seed=3))
    options = GenerationOptions(max_new_tokens=4)
    window.ask(QUESTION, options)
    assert window.ask(QUESTION, options).cached_tokens > 0
    other = window.ask("Describe the scene.", options)  # the question follows the image
    assert other.cached_tokens > 0
    generator = pipeline.prefix_generator
    generator.prefix_cache([1, 2, 3], window.frames[0])  # another prefix replaces the cached one
    assert window.ask(QUESTION, options).cached_tokens == 0


def test_a_prompt_longer_than_the_context_is_refused(tiny_bundles):
    pipeline = BundlePipeline.open(tiny_bundles["clip-llama"])
    window = FrameWindow(pipeline, size=1)
    window.add(photo(240, 320, seed=3))
    limit = pipeline.prefix_generator.decoder.context_length
    with pytest.raises(ArgumentError, match="context"):
        window.ask(QUESTION, GenerationOptions(max_new_tokens=limit))


def test_sampling_is_reproducible_with_a_seed_and_stays_in_the_nucleus():
    logits = np.array([4.0, 3.5, 1.0, -2.0, 0.0])
    draws = [next_token(logits, 1.0, 0.7, np.random.default_rng(seed)) for seed in range(200)]
    assert set(draws) == {0, 1}  # softmax: 0.59, 0.36, ... -> the 0.7 nucleus is {0, 1}
    again = [next_token(logits, 1.0, 0.7, np.random.default_rng(seed)) for seed in range(200)]
    assert draws == again
    assert next_token(logits, 0.0, 1.0, np.random.default_rng(0)) == 0
    assert next_token(logits, 1.0, 1e-6, np.random.default_rng(0)) == 0
    wide = {next_token(logits, 5.0, 1.0, np.random.default_rng(seed)) for seed in range(300)}
    assert wide == {0, 1, 2, 3, 4}


SYSTEM = "You are the perception module of a delivery robot. Answer in one short sentence."


def test_a_system_prompt_is_prefilled_once_and_answers_stay_exact(pipeline):
    window = FrameWindow(pipeline, size=1, system=SYSTEM)
    options = GenerationOptions(max_new_tokens=8)
    answers = []
    for seed in (4, 5):
        image = photo(240, 320, seed=seed)
        window.add(image)
        answers.append(window.ask(QUESTION, options))
        ids = window.prompt_ids(QUESTION)
        assert answers[-1].token_ids == Session(pipeline, image, options).ask_ids(ids).token_ids
    split = ids.index(pipeline.prompts.spec.image_token_id)
    assert SYSTEM in pipeline.prompts.tokenizer.decode(ids[:split])
    assert answers[1].cached_tokens == split and answers[1].prefill_tokens == len(ids) - split


def test_an_empty_system_prompt_is_one_line(tiny_bundles, capsys):
    from zipvlm.cli.main import main

    code = main(
        [
            "stream",
            "--bundle",
            str(tiny_bundles["clip-llama"]),
            "--source",
            "synthetic",
            "--prompt",
            "Hi?",
            "--system",
            " ",
            "--max-frames",
            "1",
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == "zipvlm stream: error: the system prompt is empty"
