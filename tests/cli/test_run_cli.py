"""`zipvlm run`: an answer from a bundle and an image file, and one clear line for bad input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from images import photo

from zipvlm.cli.main import main


@pytest.fixture(scope="module")
def bundle(tiny_bundles):
    return tiny_bundles["clip-llama"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    bgr = photo(480, 640, seed=2)
    cv2.imwrite(str(root / "street.jpg"), bgr)
    cv2.imwrite(str(root / "gray.png"), bgr[:, :, 0])
    cv2.imwrite(str(root / "alpha.png"), np.dstack([bgr, np.full((480, 640), 128, np.uint8)]))
    (root / "notes.jpg").write_text("this is not an image")
    return root


def run_json(capsys, *args) -> dict:
    assert main(["run", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_answer_has_text_ids_tokens_and_timings(bundle, images, capsys):
    out = run_json(
        capsys,
        "--bundle",
        str(bundle),
        "--image",
        str(images / "street.jpg"),
        "--prompt",
        "What is in the image?",
        "--max-new-tokens",
        "12",
    )
    assert set(out) == {"text", "token_ids", "num_image_tokens", "timings_ms"}
    assert out["num_image_tokens"] == 64
    assert 1 <= len(out["token_ids"]) <= 12
    assert set(out["timings_ms"]) == {"preprocess", "vision", "prefill", "first_token", "decode_tokens_per_s"}
    again = run_json(
        capsys,
        "--bundle",
        str(bundle),
        "--image",
        str(images / "street.jpg"),
        "--prompt",
        "What is in the image?",
        "--max-new-tokens",
        "12",
    )
    assert again["token_ids"] == out["token_ids"]  # greedy is deterministic


def test_streamed_text_equals_the_json_text(bundle, images, capsys):
    args = [
        "--bundle",
        str(bundle),
        "--image",
        str(images / "street.jpg"),
        "--raw-prompt",
        "USER: <image>\nDescribe the scene. ASSISTANT:",
        "--max-new-tokens",
        "10",
    ]
    want = run_json(capsys, *args)["text"]
    assert main(["run", *args]) == 0
    captured = capsys.readouterr()
    assert captured.out == want + "\n"
    assert "64 image tokens" in captured.err and "tokens/s" in captured.err


@pytest.mark.parametrize("name", ["gray.png", "alpha.png"])
def test_grayscale_and_alpha_images_are_converted(bundle, images, capsys, name):
    out = run_json(
        capsys,
        "--bundle",
        str(bundle),
        "--image",
        str(images / name),
        "--prompt",
        "Is the door open?",
        "--max-new-tokens",
        "4",
    )
    assert out["num_image_tokens"] == 64


def _one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("image", "prompt_args", "message"),
    [
        ("notes.jpg", ["--prompt", "hi"], "cannot read"),
        ("missing.jpg", ["--prompt", "hi"], "image not found"),
        ("street.jpg", ["--raw-prompt", "USER: what is this? ASSISTANT:"], "found 0"),
        ("street.jpg", ["--raw-prompt", "<image> <image> compare"], "found 2"),
        ("street.jpg", ["--prompt", "  "], "the prompt is empty"),
        ("street.jpg", ["--prompt", "hi", "--max-new-tokens", "0"], "at least 1"),
    ],
)
def test_bad_input_is_one_line(bundle, images, capsys, image, prompt_args, message):
    err = _one_line_error(
        capsys, ["run", "--bundle", str(bundle), "--image", str(images / image), *prompt_args]
    )
    assert message in err


def test_tampered_bundle_is_refused(bundle, images, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    with open(copy / "embed.onnx", "ab") as handle:
        handle.write(b"\0")
    err = _one_line_error(
        capsys, ["run", "--bundle", str(copy), "--image", str(images / "street.jpg"), "--prompt", "hi"]
    )
    assert "embed.onnx does not match its sha256" in err


def test_bundle_of_another_format_version_is_refused(bundle, images, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    err = _one_line_error(
        capsys, ["run", "--bundle", str(copy), "--image", str(images / "street.jpg"), "--prompt", "hi"]
    )
    assert "format 99" in err


def test_seeded_sampling_is_reproducible_and_seed_dependent(bundle, images, capsys):
    def sample(seed):
        return run_json(
            capsys,
            "--bundle",
            str(bundle),
            "--image",
            str(images / "street.jpg"),
            "--prompt",
            "Describe the scene.",
            "--max-new-tokens",
            "12",
            "--temperature",
            "1.5",
            "--top-p",
            "0.95",
            "--seed",
            str(seed),
        )["token_ids"]

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)
