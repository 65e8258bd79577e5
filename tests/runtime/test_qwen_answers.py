"""Qwen2.5-VL answers equal transformers': --no-zip equals `generate`; with VisionZip, the language model
fed the reference selection at the unpruned prompt's positions. Through run, chat (multi-turn KV
reuse), stream (prefix cache, several frames) and serve (several images)."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import QWEN_ZIP
from images import photo
from reference_qwen import (
    NEAR_TIE,
    lm_greedy,
    probe_tower,
    prompt_embeds,
    pruned_columns,
    reference_selection,
    unpruned_positions,
)

from zipvlm.bundle.format import Bundle
from zipvlm.cli.main import main
from zipvlm.runtime.conversation import Session
from zipvlm.runtime.generation import GenerationOptions
from zipvlm.runtime.pipeline import BundlePipeline
from zipvlm.runtime.preprocess import pixel_values
from zipvlm.runtime.stream import FrameWindow

pytestmark = pytest.mark.slow  # runs exported bundles against transformers
STEPS = 12
QUESTION = "What is in the image?"
RAW = (
    f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{QUESTION}<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def model(qwen_folder):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_folder, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def pipelines(qwen_bundles) -> dict[str, BundlePipeline]:
    return {name: BundlePipeline.open(path) for name, path in qwen_bundles.items()}


def camera(bundle: Bundle, seed: int) -> np.ndarray:
    return photo(bundle.qwen.camera_height, bundle.qwen.camera_width, seed=seed)


def unpruned_ids(ids: list[int], image_token: int, per_image: int, merged: int) -> list[int]:
    """The prompt as transformers' processor writes it: every image's run holds all merged tokens."""
    out, run = [], 0
    for token in ids:
        run = run + 1 if token == image_token else 0
        if token == image_token and run == 1:
            out += [image_token] * merged
        elif token != image_token:
            out.append(token)
        if run == per_image:
            run = 0
    return out


def reference_answer(
    model, bundle: Bundle, ids: list[int], frames: list[np.ndarray], steps: int
) -> list[int]:
    """Greedy ids of transformers' language model: each image's rows from the reference selection
    (every merged token without VisionZip), at the columns of the unpruned prompt's positions that
    their merged tokens hold there."""
    grid, selection = bundle.qwen.grid, bundle.selection
    rows, tokens = [], []
    for frame in frames:
        scores, keys, hidden = probe_tower(model, pixel_values(frame, bundle)[0])
        if selection.enabled:
            ref = reference_selection(scores, keys, hidden, selection.dominant, selection.contextual)
            assert ref.margin > NEAR_TIE, f"near tie at rank D ({ref.margin:.1e}): pick another frame"
            rows.append(ref.keep + ref.targets)
            tokens.append(ref.tokens)
        else:
            rows.append(list(range(grid.num_merged)))
            tokens.append(hidden)
    image_token = bundle.language.image_token_id
    full = unpruned_ids(ids, image_token, selection.num_image_tokens, grid.num_merged)
    positions, next_position = unpruned_positions(model, full, [[1, grid.grid_h, grid.grid_w]] * len(frames))
    columns = pruned_columns(ids, image_token, rows, grid.num_merged)
    embeds = prompt_embeds(model, ids, np.concatenate(tokens).astype(np.float32))
    return lm_greedy(model, embeds, positions[:, columns], next_position, steps)


def until_eos(ids: list[int], eos: set[int]) -> list[int]:
    return ids[: next((i for i, t in enumerate(ids) if t in eos), len(ids))]


def run_json(capsys, bundle, image_path, raw: str = RAW) -> dict:
    argv = ["run", "--bundle", str(bundle), "--image", str(image_path), "--raw-prompt", raw]
    assert main([*argv, "--max-new-tokens", str(STEPS), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_run_without_visionzip_equals_generate(qwen_bundles, pipelines, qwen_folder, model, tmp_path, capsys):
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer

    bundle = pipelines["nozip"].bundle
    frame = camera(bundle, seed=11)
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    got = run_json(capsys, qwen_bundles["nozip"], tmp_path / "frame.png")
    assert got["num_image_tokens"] == 256

    processed = AutoImageProcessor.from_pretrained(qwen_folder)(
        images=[Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1]))], return_tensors="pt"
    )
    ids = AutoTokenizer.from_pretrained(qwen_folder)(RAW.replace("<|image_pad|>", "<|image_pad|>" * 256))
    input_ids = torch.tensor([ids["input_ids"]])
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            mm_token_type_ids=(input_ids == model.config.image_token_id).int(),  # else 1D positions
            **processed,
            max_new_tokens=STEPS,
            do_sample=False,
        )
    want = until_eos(out[0, input_ids.shape[1] :].tolist(), pipelines["nozip"].eos_ids)
    assert len(want) >= 4 and got["token_ids"] == want


def test_run_with_visionzip_equals_the_language_model_fed_the_reference(
    qwen_bundles, pipelines, model, tmp_path, capsys
):
    pipeline = pipelines["zip"]
    frame = camera(pipeline.bundle, seed=12)
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    got = run_json(capsys, qwen_bundles["zip"], tmp_path / "frame.png")
    assert got["num_image_tokens"] == sum(QWEN_ZIP)
    want = reference_answer(model, pipeline.bundle, pipeline.prompts.encode(RAW), [frame], STEPS)
    assert len(got["token_ids"]) >= 4 and got["token_ids"] == until_eos(want, pipeline.eos_ids)


def test_prefill_logits_equal_transformers_and_depend_on_the_positions(pipelines, model):
    from transformers import DynamicCache

    pipeline = pipelines["zip"]
    bundle, frame = pipeline.bundle, camera(pipelines["zip"].bundle, seed=13)
    seen = pipeline.embed_image(frame)
    ids = pipeline.prompts.encode(RAW)
    decoder = pipeline.prefix_generator.decoder
    positions = pipeline.positions(ids, seen.keep_indices)
    logits, _ = decoder.forward(ids, seen.embeds, decoder.empty, positions)

    ref = reference_selection(*probe_tower(model, pixel_values(frame, bundle)[0]), *QWEN_ZIP)
    assert seen.keep_indices[0].tolist() == ref.keep
    image_token, grid = bundle.language.image_token_id, bundle.qwen.grid
    full = unpruned_ids(ids, image_token, sum(QWEN_ZIP), grid.num_merged)
    unpruned, _ = unpruned_positions(model, full, [[1, grid.grid_h, grid.grid_w]])
    at = unpruned[:, pruned_columns(ids, image_token, [ref.keep + ref.targets], grid.num_merged)]
    embeds = torch.from_numpy(prompt_embeds(model, ids, seen.embeds[0]))[None]

    def hf_logits(positions_3d: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model.model.language_model(
                inputs_embeds=embeds,
                position_ids=torch.from_numpy(positions_3d)[:, None],
                past_key_values=DynamicCache(),
            )
            return model.lm_head(out.last_hidden_state[:, -1])[0].numpy()

    np.testing.assert_array_equal(positions.prompt, at)
    np.testing.assert_allclose(logits, hf_logits(at), atol=1e-4, rtol=0)
    one_axis = np.tile(np.arange(len(ids)), (3, 1))
    assert np.abs(hf_logits(one_axis) - logits).max() > 1e-2  # the positions matter to this model


@pytest.fixture(scope="module")
def eos_bundle(qwen_bundles, pipelines, tmp_path_factory):
    """The VisionZip bundle with its end token set to one the random model emits in its first
    answer, so that the first turn ends on EOS as a trained model's does."""
    pipeline = pipelines["zip"]
    tokens = Session(pipeline, camera(pipeline.bundle, 14), GenerationOptions(STEPS)).ask(QUESTION).token_ids
    eos = tokens[3]
    out = tmp_path_factory.mktemp("qwen-eos") / "bundle"
    shutil.copytree(qwen_bundles["zip"], out)
    config = json.loads((out / "genai_config.json").read_text())
    config["model"]["eos_token_id"] = eos
    (out / "genai_config.json").write_text(json.dumps(config))
    opened = Bundle.open(out, verify_hashes=False)  # genai_config.json was just edited
    dataclasses.replace(opened, language=dataclasses.replace(opened.language, eos_token_ids=(eos,))).write()
    return BundlePipeline.open(out)


def test_a_follow_up_reuses_the_cache_and_equals_transformers_on_the_whole_conversation(eos_bundle, model):
    frame = camera(eos_bundle.bundle, 14)
    session = Session(eos_bundle, frame, GenerationOptions(STEPS))
    first = session.ask(QUESTION)
    assert len(first.token_ids) < STEPS  # ended on EOS
    follow_up = "And the colour of the car?"
    second = session.ask(follow_up)
    assert second.prefill_tokens == len(eos_bundle.prompts.continuation(follow_up))
    conversation = session.history[: len(session.history) - len(second.token_ids)]
    want = reference_answer(model, eos_bundle.bundle, conversation, [frame], STEPS)
    assert second.token_ids == until_eos(want, eos_bundle.eos_ids)


def test_a_follow_up_after_a_cut_answer_re_prefills_at_the_same_positions(pipelines, model):
    pipeline = pipelines["zip"]
    frame = camera(pipeline.bundle, 15)
    session = Session(pipeline, frame, GenerationOptions(max_new_tokens=3))
    assert len(session.ask(QUESTION).token_ids) == 3  # cut by the budget
    second = session.ask("Is it raining?")
    conversation = session.history[: len(session.history) - len(second.token_ids)]
    assert second.prefill_tokens == len(conversation)
    assert second.token_ids == until_eos(
        reference_answer(model, pipeline.bundle, conversation, [frame], 3), pipeline.eos_ids
    )


def test_stream_answers_reuse_the_prefix_and_equal_genai(pipelines):
    pipeline = pipelines["zip"]
    window = FrameWindow(pipeline, size=1)
    options = GenerationOptions(max_new_tokens=8)
    for seed in (16, 17, 18):
        frame = camera(pipeline.bundle, seed)
        window.add(frame)
        answer = window.ask(QUESTION, options)
        ids = window.prompt_ids(QUESTION)
        assert answer.token_ids == Session(pipeline, frame, options).ask_ids(ids).token_ids
        split = ids.index(pipeline.bundle.language.image_token_id)
        assert answer.cached_tokens == (0 if seed == 16 else split)


@pytest.mark.parametrize("which", ["nozip", "zip"])
def test_a_window_of_three_frames_equals_transformers_on_three_images(pipelines, model, which):
    pipeline = pipelines[which]
    frames = [camera(pipeline.bundle, seed) for seed in (30, 31, 32, 33)]
    window = FrameWindow(pipeline, size=3)
    for frame in frames:  # four frames: the oldest falls out
        window.add(frame)
    answer = window.ask(QUESTION, GenerationOptions(max_new_tokens=STEPS))
    assert answer.num_image_tokens == 3 * pipeline.num_image_tokens
    want = reference_answer(model, pipeline.bundle, window.prompt_ids(QUESTION), frames[1:], STEPS)
    assert len(answer.token_ids) >= 4 and answer.token_ids == until_eos(want, pipeline.eos_ids)


def test_stream_with_a_window_from_the_command_line(qwen_bundles, capsys):
    argv = [
        "stream",
        "--bundle",
        str(qwen_bundles["zip"]),
        "--source",
        "synthetic",
        "--prompt",
        "What moves?",
    ]
    assert main([*argv, "--window", "3", "--max-frames", "4", "--max-new-tokens", "2", "--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["num_image_tokens"] for a in answers] == [43, 86, 129, 129]
    assert all("error" not in a for a in answers)


def test_the_server_answers_about_two_images_as_transformers_does(pipelines, model):
    import httpx
    from servers import running

    from zipvlm.serve.app import create_app

    pipeline = pipelines["zip"]
    frames = [camera(pipeline.bundle, seed) for seed in (24, 25)]
    urls = [
        "data:image/png;base64," + base64.b64encode(cv2.imencode(".png", frame)[1].tobytes()).decode()
        for frame in frames
    ]
    content = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    messages = [{"role": "user", "content": [*content, {"type": "text", "text": "Which is brighter?"}]}]
    with running(create_app(pipeline, "tiny")) as base:
        reply = httpx.post(
            f"{base}/v1/chat/completions", json={"messages": messages, "max_tokens": STEPS}, timeout=60
        ).json()
    assert reply["usage"]["visual_tokens"] == 2 * sum(QWEN_ZIP)
    parts = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Which is brighter?"}]
    ids = pipeline.prompts.encode(pipeline.prompts.conversation_text([{"role": "user", "content": parts}]), 2)
    want = until_eos(reference_answer(model, pipeline.bundle, ids, frames, STEPS), pipeline.eos_ids)
    text = pipeline.prompts.tokenizer.decode(want, skip_special_tokens=True)
    assert reply["choices"][0]["message"]["content"] == text
