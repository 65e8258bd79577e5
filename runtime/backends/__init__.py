"""Vision backends: onnxruntime (`ort`) or a TensorRT plan built on the target (`trt`).

Each backend is a loader (opens the session or engine) and a runner with one
interface: `runner(pixels) -> image_embeds` float32 (B, K, H) and the attribute
`keep_indices` (B, D) of the last call. TensorRT and CUDA are imported only when
the `trt` backend is opened, so a machine without them loses nothing else.
"""

from __future__ import annotations

from pathlib import Path

from zipvlm.runtime.errors import ArgumentError, ZipvlmError

BACKENDS = ("ort", "trt")


class BackendError(ZipvlmError):
    """TensorRT, CUDA or a GPU is missing, or a plan does not fit this device."""


def open_vision_runner(bundle: Path, backend: str, provider: str, threads: int, target: str | None):
    """The bundle's vision graph on `backend`; `target` picks the plan for `trt`."""
    if backend == "ort":
        from zipvlm.runtime.bundle import FLOAT_GRAPH
        from zipvlm.runtime.providers import VisionRunner

        if target is not None:
            raise ArgumentError("--target picks a TensorRT plan: use it with --backend trt")
        return VisionRunner.open(Path(bundle) / FLOAT_GRAPH, provider, threads)
    if backend == "trt":
        from zipvlm.runtime.backends.tensorrt_runner import open_tensorrt_runner

        return open_tensorrt_runner(Path(bundle), target)
    raise ArgumentError(f"--backend {backend} is not one of {', '.join(BACKENDS)}")
