"""Vision backends: onnxruntime (`ort`) or a TensorRT plan built on the target (`trt`).

Each backend is a loader (opens the session or engine) and a runner with one
interface: `runner(pixels) -> image_embeds` float32 (B, K, H) and the attribute
`keep_indices` (B, D) of the last call. TensorRT and CUDA are imported only when
the `trt` backend is opened, so a machine without them loses nothing else.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from zipvlm.runtime.errors import ArgumentError, ZipvlmError

log = logging.getLogger(__name__)

BACKENDS = ("ort", "trt")
VISION_GRAPHS = ("float", "int8")  # vision.onnx, or the Q/DQ vision.int8.onnx of zipvlm calib quantize


class BackendError(ZipvlmError):
    """TensorRT, CUDA or a GPU is missing, or a plan does not fit this device."""


def open_vision_runner(bundle: Path, backend: str, provider: str, threads: int, target: str | None,
                       graph: str = "float"):
    """The bundle's vision graph on `backend`; `target` picks the plan for `trt`, `graph` the
    onnxruntime graph for `ort`."""
    if graph not in VISION_GRAPHS:
        raise ArgumentError(f"--vision-graph {graph} is not one of {', '.join(VISION_GRAPHS)}")
    if backend == "ort":
        if target is not None:
            raise ArgumentError("--target picks a TensorRT plan: use it with --backend trt")
        return _open_ort(Path(bundle), provider, threads, graph)
    if backend == "trt":
        from zipvlm.runtime.backends.tensorrt_runner import open_tensorrt_runner

        if graph != "float":
            raise ArgumentError("--vision-graph picks onnxruntime's graph; a TensorRT plan's precision "
                                "is set when it is built (zipvlm engine --int8): drop --vision-graph")
        return open_tensorrt_runner(Path(bundle), target)
    raise ArgumentError(f"--backend {backend} is not one of {', '.join(BACKENDS)}")


def _open_ort(bundle: Path, provider: str, threads: int, graph: str):
    from zipvlm.runtime.bundle import FLOAT_GRAPH, INT8_GRAPH, load_manifest
    from zipvlm.runtime.providers import INT8_DISABLED_OPTIMIZERS, VisionRunner

    if graph == "float":
        return VisionRunner.open(bundle / FLOAT_GRAPH, provider, threads)
    if INT8_GRAPH not in load_manifest(bundle, verify_hashes=False).get("files", {}):
        raise ArgumentError(f"--vision-graph int8 runs {INT8_GRAPH}, which {bundle} lacks: make it with "
                            f"zipvlm calib quantize --bundle {bundle} --frames FRAMES")
    log.info("vision: %s; %s", INT8_GRAPH, int8_accuracy_line(bundle))
    return VisionRunner.open(bundle / INT8_GRAPH, provider, threads, INT8_DISABLED_OPTIMIZERS)


def int8_accuracy_line(bundle: Path) -> str:
    """What `zipvlm calib quantize` measured of this bundle's INT8 graph, in one line."""
    path = Path(bundle) / "reports" / "int8.json"
    try:
        report = json.loads(path.read_text())
        kernels, held_out = report["cpu_int8_kernels"], report["frames"]["held_out"]
        return (f"against vision.onnx on {held_out} held-out frames: kept-token IoU "
                f"{kernels['keep_iou']['mean']:.3f} (min {kernels['keep_iou']['min']:.3f}), cosine "
                f"{kernels['cosine']['mean']:.4f} ({path})")
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable accuracy report at {path}"
