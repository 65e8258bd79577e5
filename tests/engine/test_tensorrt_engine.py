"""The real TensorRT build and backend: a tiny bundle's plan against onnxruntime.

Runs only where `tensorrt` (10.x or 11.x) and cuda-python import and a CUDA GPU is visible;
skipped with the reason everywhere else (this CPU-only dev machine included).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from zipvlm.bundle.format import Bundle
from zipvlm.cli.main import main
from zipvlm.runtime.backends import BackendError, open_vision_backend

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed here (build on the target)")


def _gpu_or_skip():
    from zipvlm.runtime.backends.device import Cuda

    try:
        return Cuda().device_facts("")
    except BackendError as exc:
        pytest.skip(f"no usable CUDA GPU or cuda-python here: {exc}")


@pytest.fixture(scope="module")
def built(tiny_bundles, tmp_path_factory):
    """The tiny CLIP bundle with an FP32 x86 plan (batch 1..2), built through the CLI."""
    _gpu_or_skip()
    bundle = shutil.copytree(tiny_bundles["clip-llama"], tmp_path_factory.mktemp("trt") / "bundle")
    assert main(["engine", "--bundle", str(bundle), "--target", "x86", "--fp32", "--max-batch", "2"]) == 0
    return bundle


def pixels(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 336, 336)).astype(np.float32)


def test_the_build_writes_plan_fingerprint_and_timing_cache(built):
    engines = built / "engines"
    assert {p.name for p in engines.iterdir()} >= {
        "vision.x86.plan",
        "vision.x86.json",
        "vision.x86.timing.cache",
        "vision.x86.report.txt",
    }
    meta = json.loads((engines / "vision.x86.json").read_text())
    assert meta["tensorrt_version"] == trt.__version__
    assert meta["precision"]["name"] == "fp32" and meta["max_batch"] == 2


def test_the_plan_matches_onnxruntime(built):
    ort = open_vision_backend(Bundle.open(built), "ort", "cpu", 2, None)
    with open_vision_backend(Bundle.open(built), "trt", "cpu", 2, None) as runner:
        for batch, seed in ((1, 0), (2, 1), (1, 2)):  # shapes change between calls
            x = pixels(batch, seed)
            (embeds, keep), (want, want_keep) = runner(x), ort(x)
            assert embeds.dtype == np.float32 and embeds.shape == want.shape
            np.testing.assert_array_equal(keep, want_keep)
            np.testing.assert_allclose(embeds, want, atol=1e-3, rtol=1e-3)


def test_a_plan_from_another_tensorrt_is_refused(built):
    meta_path = built / "engines" / "vision.x86.json"
    meta = json.loads(meta_path.read_text())
    meta["tensorrt_version"] = "10.0.0.0-other"
    meta_path.write_text(json.dumps(meta))
    try:
        with pytest.raises(BackendError, match="rebuild with make engine TARGET=x86"):
            open_vision_backend(Bundle.open(built), "trt", "cpu", 2, "x86")
    finally:
        meta["tensorrt_version"] = trt.__version__
        meta_path.write_text(json.dumps(meta))
