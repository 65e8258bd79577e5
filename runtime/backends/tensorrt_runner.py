"""The `trt` vision backend: a loader that opens a plan only where it fits, and a runner.

The runner is a `VisionBackend` (runtime/backends): `runner(pixels)` -> the
graph's image_embeds float32 (B, K, H) and keep_indices int64 (B, D) or (B, V, D). CUDA
buffers are allocated once per input shape with cuda-python; each call copies
the input in, runs `execute_async_v3` on the runner's stream, copies the outputs
back and synchronises.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zipvlm.bundle.errors import ArgumentError
from zipvlm.bundle.format import ENGINES_DIR, Bundle, EnginePaths
from zipvlm.runtime.backends import BackendError, VisionOutput
from zipvlm.runtime.backends.device import Cuda, import_tensorrt
from zipvlm.runtime.backends.fingerprint import Fingerprint, check_fingerprint

log = logging.getLogger(__name__)


def choose_target(bundle: Path, target: str | None) -> str:
    """The plan to run: `target`'s, else the only one in `BUNDLE/engines`."""
    engines = Path(bundle) / ENGINES_DIR
    found = sorted(p.name[len("vision.") : -len(".plan")] for p in engines.glob("vision.*.plan"))
    build = f"make engine TARGET={target or 'jetson|orin-nano|thor|x86'} BUNDLE={bundle}"
    if target is not None and target not in found:
        have = f" (it has {', '.join(found)})" if found else ""
        raise BackendError(f"{engines} has no vision.{target}.plan{have}: build it here with {build}")
    if target is not None:
        return target
    if not found:
        raise BackendError(f"{engines} holds no TensorRT plan: build one on this device with {build}")
    if len(found) > 1:
        raise ArgumentError(f"{engines} has plans for {', '.join(found)}: pick one with --target")
    return found[0]


def bundle_graph_sha256(bundle: Bundle, name: str) -> str:
    """The sha256 of the bundle's graph `name`: the manifest's (checked at open) or the file's."""
    if not bundle.has(name) and not bundle.file(name).is_file():
        raise BackendError(
            f"{bundle.path} has no {name}, which its TensorRT plan was built from: rebuild the engine"
        )
    return bundle.sha256(name)


def open_tensorrt_runner(bundle: Bundle, target: str | None) -> TensorRTRunner:
    """Load `target`'s plan after checking its fingerprint against this TensorRT, GPU and bundle."""
    trt = import_tensorrt(
        "--backend trt runs where its engine was built (JetPack's TensorRT on the "
        "Jetson); here use --backend ort"
    )
    target = choose_target(bundle.path, target)
    paths = EnginePaths.of(bundle.path, target)
    try:
        meta = json.loads(paths.meta.read_text())
    except (OSError, ValueError):
        raise BackendError(
            f"{paths.meta} is missing or unreadable: rebuild with make engine "
            f"TARGET={target} BUNDLE={bundle.path}"
        ) from None
    built = Fingerprint.from_meta(meta, paths.meta)
    cuda = Cuda()
    device = cuda.device_facts("--backend trt needs the GPU its plan was built on; use --backend ort")
    here = Fingerprint(
        trt.__version__,
        device.name,
        device.compute_text,
        built.onnx_name,
        bundle_graph_sha256(bundle, built.onnx_name),
    )
    check_fingerprint(built, here, paths.plan, target)
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(paths.plan.read_bytes())
    if engine is None:
        raise BackendError(
            f"TensorRT could not load {paths.plan} (its messages above say why): rebuild "
            f"with make engine TARGET={target} BUNDLE={bundle.path}"
        )
    log.info("vision on TensorRT %s: %s (%s)", trt.__version__, paths.plan.name, device.name)
    return TensorRTRunner(trt, runtime, engine, cuda)


@dataclass
class _Bound:
    """Device and host buffers of one input shape (host outputs are reused, so callers get copies)."""

    device: dict[str, int]
    host: dict[str, np.ndarray]


class TensorRTRunner:
    """A deserialised plan with its execution context, stream and per-shape buffers."""

    def __init__(self, trt, runtime, engine, cuda: Cuda):
        self._trt, self._runtime, self.engine, self.cuda = trt, runtime, engine, cuda
        self.context = engine.create_execution_context()
        self.stream = cuda.stream()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1 or not {"image_embeds", "keep_indices"} <= set(names):
            raise BackendError(
                f"this plan has tensors {names}; a zipvlm vision plan has one input and "
                "image_embeds, keep_indices: rebuild it with zipvlm engine"
            )
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n != self.input_name]
        self._bound: dict[tuple[int, ...], _Bound] = {}

    def __call__(self, pixels: np.ndarray) -> VisionOutput:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        bound = self._bind(pixels.shape)
        self.cuda.to_device(bound.device[self.input_name], pixels, self.stream)
        if not self.context.execute_async_v3(int(self.stream)):
            raise BackendError("TensorRT execute_async_v3 failed (its messages above say why)")
        for name in self.output_names:
            self.cuda.to_host(bound.host[name], bound.device[name], self.stream)
        self.cuda.synchronize(self.stream)
        # Copies: the host buffers are reused by the next call.
        return VisionOutput(
            bound.host["image_embeds"].astype(np.float32), bound.host["keep_indices"].astype(np.int64)
        )

    def _bind(self, shape: tuple[int, ...]) -> _Bound:
        """Set the input shape and every tensor address; allocate the first time a shape is seen."""
        context = self.context
        if not context.set_input_shape(self.input_name, shape):
            raise BackendError(
                f"input shape {list(shape)} is outside this plan's profile (see its "
                "max_batch in engines/*.json): rebuild with a larger --max-batch"
            )
        if shape not in self._bound:
            host = {
                name: np.empty(
                    tuple(context.get_tensor_shape(name)),
                    np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name))),
                )
                for name in self.output_names
            }
            nbytes = {self.input_name: int(np.prod(shape)) * 4, **{n: a.nbytes for n, a in host.items()}}
            device = {name: self.cuda.malloc(size) for name, size in nbytes.items()}
            self._bound[shape] = _Bound(device, host)
        bound = self._bound[shape]
        for name, pointer in bound.device.items():
            if not context.set_tensor_address(name, pointer):
                raise BackendError(f"TensorRT refused the buffer of {name}")
        return bound

    def close(self) -> None:
        """Free the device buffers and the stream (also at exit of a `with` block)."""
        for bound in self._bound.values():
            for pointer in bound.device.values():
                self.cuda.free(pointer)
        self._bound.clear()
        if self.stream is not None:
            self.cuda.destroy_stream(self.stream)
            self.stream = None

    def __enter__(self) -> TensorRTRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
