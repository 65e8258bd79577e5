"""TensorRT and CUDA, imported only when asked for; the facts of this device.

CUDA comes from cuda-python (NVIDIA's own bindings: `cuda.bindings.runtime` in
12.6+ and 13, `cuda.cudart` before), the one library that gives both device
facts (name, compute capability) and device memory, streams and copies.
Polygraphy's ctypes wrapper has the copies but no device properties; pycuda
and torch are not wanted on the robot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zipvlm.runtime.backends import BackendError

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
# L4T release -> JetPack, for the releases with a TensorRT this builder drives (and the last JetPack 5).
JETPACK_OF_L4T = {"35.6.0": "5.1.4", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "38.2.0": "7.0"}


@dataclass(frozen=True)
class DeviceFacts:
    """The GPU a build or a run happens on."""

    name: str
    compute: tuple[int, int]

    @property
    def compute_text(self) -> str:
        return f"{self.compute[0]}.{self.compute[1]}"


def import_tensorrt(hint: str):
    """`tensorrt`, or one line saying it is missing and `hint` (what to do instead)."""
    try:
        import tensorrt
    except ImportError as exc:
        detail = "" if isinstance(exc, ModuleNotFoundError) and exc.name == "tensorrt" else f": {exc}"
        raise BackendError(
            f"TensorRT is not installed here (import tensorrt failed{detail}): {hint}"
        ) from None
    return tensorrt


def tensorrt_version() -> str | None:
    """The version of the TensorRT that imports here, else None (import_tensorrt then says why)."""
    try:
        import tensorrt
    except ImportError:
        return None
    return getattr(tensorrt, "__version__", None)


def cuda_runtime():
    """cuda-python's runtime module, from whichever import path this version has."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise BackendError(
                "cuda-python is not installed (neither cuda.bindings.runtime nor cuda.cudart imports): "
                "pip install the cuda-python matching this CUDA, e.g. 'cuda-python>=12.6,<13' on "
                "JetPack 6"
            ) from None
    return runtime


class Cuda:
    """The few CUDA runtime calls the TensorRT backend makes, with errors raised, not returned."""

    def __init__(self, runtime=None):
        self.rt = runtime or cuda_runtime()

    def _check(self, result, what: str):
        err, *values = result
        if err != self.rt.cudaError_t.cudaSuccess:
            _, text = self.rt.cudaGetErrorString(err)
            text = text.decode() if isinstance(text, bytes) else text
            raise BackendError(f"{what} failed: {getattr(err, 'name', err)} ({text})")
        return values[0] if len(values) == 1 else values

    def device_facts(self, hint: str) -> DeviceFacts:
        """Device 0 (as CUDA_VISIBLE_DEVICES orders them), or one line: no GPU and `hint`."""
        err, count = self.rt.cudaGetDeviceCount()
        if err != self.rt.cudaError_t.cudaSuccess or count == 0:
            why = getattr(err, "name", str(err)) if err != self.rt.cudaError_t.cudaSuccess else "0 devices"
            raise BackendError(f"TensorRT imports but no CUDA GPU is visible here ({why}): {hint}")
        prop = self._check(self.rt.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return DeviceFacts(name.rstrip("\x00").strip(), (int(prop.major), int(prop.minor)))

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(nbytes), "cudaMalloc"))

    def free(self, pointer: int) -> None:
        self._check(self.rt.cudaFree(pointer), "cudaFree")

    def stream(self):
        return self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def destroy_stream(self, stream) -> None:
        self._check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def to_device(self, pointer: int, host: np.ndarray, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self.rt.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, kind, stream),
            "cudaMemcpyAsync (to device)",
        )

    def to_host(self, host: np.ndarray, pointer: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self.rt.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, kind, stream),
            "cudaMemcpyAsync (to host)",
        )

    def synchronize(self, stream) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


def parse_tegra_release(text: str) -> dict[str, str | None] | None:
    """'# R36 (release), REVISION: 4.0, ...' -> {'l4t': '36.4.0', 'jetpack': '6.1'}; None if not L4T."""
    found = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)", text)
    if not found:
        return None
    revision = found.group(2) if "." in found.group(2) else f"{found.group(2)}.0"
    l4t = f"{found.group(1)}.{revision}"
    return {"l4t": l4t, "jetpack": JETPACK_OF_L4T.get(l4t)}


def jetson_release(path: Path = TEGRA_RELEASE) -> dict[str, str | None] | None:
    """This Jetson's L4T/JetPack release; None off a Jetson."""
    try:
        return parse_tegra_release(path.read_text())
    except OSError:
        return None
