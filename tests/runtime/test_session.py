"""Multi-turn: a follow-up reuses the KV cache and prefills only its own tokens."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from images import photo

from zipvlm.bundle.format import Bundle
from zipvlm.runtime.conversation import Session
from zipvlm.runtime.generation import GenerationOptions
from zipvlm.runtime.pipeline import BundlePipeline
from zipvlm.runtime.prompt import PromptError

IMAGE = photo(480, 640, seed=2)
OPTIONS = GenerationOptions(max_new_tokens=12)


@pytest.fixture(scope="module")
def bundle(tiny_bundles):
    return tiny_bundles["siglip-qwen2"]


@pytest.fixture(scope="module")
def eos_bundle(bundle, tmp_path_factory):
    """The bundle with its end token set to one the random model emits in its first answer,
    so that the first turn ends on EOS as a trained model's does."""
    tokens = Session(BundlePipeline.open(bundle), IMAGE, OPTIONS).ask("What is in the image?").token_ids
    eos = tokens[3]
    out = tmp_path_factory.mktemp("eos") / "bundle"
    shutil.copytree(bundle, out)
    config = json.loads((out / "genai_config.json").read_text())
    config["model"]["eos_token_id"] = eos
    (out / "genai_config.json").write_text(json.dumps(config))
    opened = Bundle.open(out, verify_hashes=False)  # genai_config.json was just edited
    dataclasses.replace(opened, language=dataclasses.replace(opened.language, eos_token_ids=(eos,))).write()
    return out


def test_follow_up_after_eos_prefills_only_its_own_tokens(eos_bundle):
    pipeline = BundlePipeline.open(eos_bundle)
    session = Session(pipeline, IMAGE, OPTIONS)
    first = session.ask("What is in the image?")
    assert len(first.token_ids) < OPTIONS.max_new_tokens  # ended on EOS
    second = session.ask("And the colour of the car?")
    assert second.prefill_tokens == len(pipeline.prompts.continuation("And the colour of the car?"))
    assert second.timings_ms["vision"] == 0.0  # the image is not encoded again


def test_two_turns_equal_one_fresh_run_over_the_whole_conversation(eos_bundle):
    pipeline = BundlePipeline.open(eos_bundle)
    session = Session(pipeline, IMAGE, OPTIONS)
    session.ask("What is in the image?")
    second = session.ask("And the colour of the car?")
    conversation = session.history[: len(session.history) - len(second.token_ids)]
    fresh = Session(pipeline, IMAGE, OPTIONS).ask_ids(conversation)
    assert fresh.token_ids == second.token_ids
    assert fresh.prefill_tokens == len(conversation) > second.prefill_tokens


def test_follow_up_after_a_cut_answer_re_prefills_and_stays_correct(bundle):
    pipeline = BundlePipeline.open(bundle)
    session = Session(pipeline, IMAGE, GenerationOptions(max_new_tokens=3))
    first = session.ask("What is in the image?")
    assert len(first.token_ids) == 3  # cut by the budget, not ended
    second = session.ask("Is it raining?")
    assert second.prefill_tokens == len(session.history) - len(second.token_ids)
    conversation = session.history[: len(session.history) - len(second.token_ids)]
    fresh = Session(pipeline, IMAGE, GenerationOptions(max_new_tokens=3)).ask_ids(conversation)
    assert fresh.token_ids == second.token_ids


def test_follow_up_with_an_image_token_is_refused(bundle):
    session = Session(BundlePipeline.open(bundle), IMAGE, OPTIONS)
    session.ask("What is in the image?")
    with pytest.raises(PromptError, match="cannot hold the image token"):
        session.ask("compare with <image>")


def test_chat_answers_each_line_of_stdin(bundle, tmp_path):
    import subprocess
    import sys

    import cv2

    cv2.imwrite(str(tmp_path / "street.jpg"), IMAGE)
    command = [
        sys.executable,
        "-m",
        "zipvlm.cli",
        "chat",
        "--bundle",
        str(bundle),
        "--image",
        str(tmp_path / "street.jpg"),
        "--max-new-tokens",
        "4",
    ]
    done = subprocess.run(
        command,
        input="What is in the image?\n\nIs it raining?\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    timing_lines = [line for line in done.stderr.splitlines() if line.startswith("[prefill")]
    assert len(timing_lines) == 2 and len(done.stdout.splitlines()) == 2
    missing = subprocess.run(
        [*command[:-4], "--image", str(tmp_path / "none.jpg")],
        input="hi\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "image not found" in missing.stderr
