"""Vision backends: onnxruntime (`ort`) or a TensorRT plan built on the target (`trt`).

Each backend is a loader (opens the session or engine) and a runner with one
interface, `VisionBackend`: `runner(pixels)` gives a `VisionOutput`, the image
embeddings and the token indices VisionZip kept for those very pixels. TensorRT
and CUDA are imported only when the `trt` backend is opened, so a machine
without them loses nothing else.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from zipvlm.bundle.errors import ArgumentError, ZipvlmError

if TYPE_CHECKING:
    from zipvlm.bundle.format import Bundle

log = logging.getLogger(__name__)

BACKENDS = ("ort", "trt")
VISION_GRAPHS = ("float", "int8")  # vision.onnx, or the Q/DQ vision.int8.onnx of zipvlm calib quantize


class BackendError(ZipvlmError):
    """TensorRT, CUDA or a GPU is missing, or a plan does not fit this device."""


class VisionOutput(NamedTuple):
    image_embeds: np.ndarray  # (B, K, hidden) float32
    keep_indices: np.ndarray  # (B, D), or (B, V, D) per view; int64, ascending: the tokens kept


class VisionBackend(Protocol):
    def __call__(self, pixels: np.ndarray) -> VisionOutput:
        """pixel_values (B, 3, S, S), or (B, V, 3, S, S) any-res, float32 -> the graph's two outputs."""
        ...


def open_vision_backend(
    bundle: Bundle,
    backend: str = "ort",
    provider: str = "cpu",
    threads: int = 2,
    target: str | None = None,
    graph: str = "float",
) -> VisionBackend:
    """The bundle's vision graph on `backend`; `target` picks the plan for `trt`, `graph` the
    onnxruntime graph for `ort`."""
    if graph not in VISION_GRAPHS:
        raise ArgumentError(f"--vision-graph {graph} is not one of {', '.join(VISION_GRAPHS)}")
    if backend == "ort":
        if target is not None:
            raise ArgumentError("--target picks a TensorRT plan: use it with --backend trt")
        return _open_ort(bundle, provider, threads, graph)
    if backend == "trt":
        from zipvlm.runtime.backends.tensorrt_runner import open_tensorrt_runner

        if graph != "float":
            raise ArgumentError(
                "--vision-graph picks onnxruntime's graph; a TensorRT plan's precision "
                "is set when it is built (zipvlm engine --int8): drop --vision-graph"
            )
        return open_tensorrt_runner(bundle, target)
    raise ArgumentError(f"--backend {backend} is not one of {', '.join(BACKENDS)}")


def _open_ort(bundle: Bundle, provider: str, threads: int, graph: str) -> VisionBackend:
    from zipvlm.bundle.format import FLOAT_GRAPH, INT8_GRAPH
    from zipvlm.runtime.backends.ort import OrtVisionRunner
    from zipvlm.runtime.providers import INT8_DISABLED_OPTIMIZERS

    if graph == "float":
        return OrtVisionRunner.open(bundle.file(FLOAT_GRAPH), provider, threads)
    if not bundle.has(INT8_GRAPH):
        raise ArgumentError(
            f"--vision-graph int8 runs {INT8_GRAPH}, which {bundle.path} lacks: make it "
            f"with zipvlm calib quantize --bundle {bundle.path} --frames FRAMES"
        )
    log.info("vision: %s; %s", INT8_GRAPH, int8_accuracy_line(bundle.path))
    return OrtVisionRunner.open(bundle.file(INT8_GRAPH), provider, threads, INT8_DISABLED_OPTIMIZERS)


def int8_accuracy_line(bundle: Path) -> str:
    """What `zipvlm calib quantize` measured of this bundle's INT8 graph, in one line."""
    path = Path(bundle) / "reports" / "int8.json"
    try:
        report = json.loads(path.read_text())
        kernels, held_out = report["cpu_int8_kernels"], report["frames"]["held_out"]
        return (
            f"against vision.onnx on {held_out} held-out frames: kept-token IoU "
            f"{kernels['keep_iou']['mean']:.3f} (min {kernels['keep_iou']['min']:.3f}), cosine "
            f"{kernels['cosine']['mean']:.4f} ({path})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable accuracy report at {path}"
