"""What a TensorRT plan is bound to: the TensorRT that built it, the GPU, and the graph.

A plan runs only on the TensorRT version and GPU it was built with, and is only
right for the graph it was built from. The sidecar JSON records these; the
runtime compares them with this device and the bundle before deserialising.
Pure functions, so the comparison is tested where TensorRT is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zipvlm.runtime.backends import BackendError


@dataclass(frozen=True)
class Fingerprint:
    tensorrt: str  # trt.__version__
    gpu: str  # CUDA device name
    compute: str  # compute capability, "8.7"
    onnx_name: str  # vision.onnx or the Q/DQ graph
    onnx_sha256: str

    @classmethod
    def from_meta(cls, meta: dict[str, Any], source: Path) -> Fingerprint:
        """From an engine's sidecar JSON (as `tensorrt_build` writes it)."""
        try:
            return cls(
                str(meta["tensorrt_version"]),
                str(meta["gpu"]["name"]),
                str(meta["gpu"]["compute_capability"]),
                str(meta["onnx"]["file"]),
                str(meta["onnx"]["sha256"]),
            )
        except (KeyError, TypeError):
            raise BackendError(
                f"{source} is not a zipvlm engine record (no TensorRT version, GPU or "
                "ONNX sha256): rebuild the engine with zipvlm engine"
            ) from None


def mismatches(built: Fingerprint, here: Fingerprint) -> list[str]:
    """Each way the plan's fingerprint differs from this device and bundle, as a short phrase."""
    found = []
    if built.tensorrt != here.tensorrt:
        found.append(f"built with TensorRT {built.tensorrt}, this is TensorRT {here.tensorrt}")
    if (built.gpu, built.compute) != (here.gpu, here.compute):
        found.append(f"built on {built.gpu} ({built.compute}), this GPU is {here.gpu} ({here.compute})")
    if built.onnx_sha256 != here.onnx_sha256:
        found.append(
            f"built from a {built.onnx_name} with sha256 {built.onnx_sha256[:12]}, the bundle's "
            f"is {here.onnx_sha256[:12]}"
        )
    return found


def check_fingerprint(built: Fingerprint, here: Fingerprint, plan: Path, target: str) -> None:
    """One line naming every mismatch and the rebuild command, or nothing."""
    found = mismatches(built, here)
    if found:
        bundle = plan.parent.parent
        raise BackendError(
            f"{plan} does not fit here ({'; '.join(found)}): rebuild with "
            f"make engine TARGET={target} BUNDLE={bundle}"
        )
