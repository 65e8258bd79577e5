"""Execution providers: the IO-bound vision runner, and one clear line for a provider this install lacks."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from images import photo

from zipvlm.bundle.format import Bundle
from zipvlm.cli.main import main
from zipvlm.runtime.backends.ort import OrtVisionRunner
from zipvlm.runtime.preprocess import preprocess
from zipvlm.runtime.providers import ORT_NAMES


@pytest.fixture(scope="module")
def bundle(tiny_bundles):
    return tiny_bundles["siglip-qwen2"]


def pixels_of(bundle, seed: int) -> np.ndarray:
    return preprocess(photo(300, 400, seed=seed), Bundle.open(bundle, verify_hashes=False).preprocess)


def test_io_bound_runner_equals_a_plain_session_and_never_aliases_frames(bundle):
    runner = OrtVisionRunner.open(bundle / "vision.onnx", "cpu", threads=1)
    plain = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    first, second = pixels_of(bundle, 1), pixels_of(bundle, 2)
    got_first = runner(first)
    got_second = runner(second)  # reuses the bound buffers
    for pixels, got in ((first, got_first), (second, got_second)):
        want = plain.run(["image_embeds", "keep_indices"], {"pixel_values": pixels})
        for got_output, want_output in zip(got, want, strict=True):
            np.testing.assert_array_equal(got_output, want_output)
    assert not np.array_equal(got_first.image_embeds, got_second.image_embeds)
    batch = np.concatenate([first, second])  # another shape gets its own binding
    got_batch = runner(batch)
    np.testing.assert_array_equal(
        got_batch.image_embeds, np.concatenate([got_first.image_embeds, got_second.image_embeds])
    )
    np.testing.assert_array_equal(
        got_batch.keep_indices, np.concatenate([got_first.keep_indices, got_second.keep_indices])
    )


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_a_provider_this_install_lacks_is_one_line(bundle, tmp_path, capsys, provider):
    if ORT_NAMES[provider] in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {ORT_NAMES[provider]}")
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), photo(120, 160, seed=0))
    code = main(
        ["run", "--bundle", str(bundle), "--image", str(image), "--prompt", "Hi?", "--provider", provider]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert f"--provider {provider}: this onnxruntime has no {ORT_NAMES[provider]}" in err
