"""Build a TensorRT plan from a checked `BuildConfig` with the TensorRT 10 or 11 Python API.

TensorRT 10 is weakly typed: FP16/INT8/FP8 are builder flags. TensorRT 11 removed
them: the graph's own types decide (`vision.fp16.onnx`, the Q/DQ graphs), and the
builder only clears TF32 so that float32 stays float32.

The plan goes to `engines/vision.<target>.plan`, its fingerprint and build facts
to the sidecar `vision.<target>.json` (never into the plan itself), and the
timing cache to `vision.<target>.timing.cache`, read back by the next build on
the same device so a rebuild skips most kernel timing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zipvlm.engine.targets import (
    BuildConfig,
    DeviceFacts,
    check_device,
    check_tensorrt_version,
)
from zipvlm.runtime.backends import BackendError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    plan: Path
    meta: Path
    seconds: float
    plan_bytes: int


def engine_record(
    config: BuildConfig,
    tensorrt_version: str,
    device: DeviceFacts,
    jetson: dict[str, str | None] | None,
    onnx_sha256: str,
    seconds: float,
    plan_bytes: int,
    zipvlm_version: str,
) -> dict[str, Any]:
    """The sidecar JSON: what the plan is bound to (see fingerprint.py) and how it was built."""
    lo, opt, hi = config.profile
    return {
        "target": config.target.name,
        "tensorrt_version": tensorrt_version,
        "gpu": {"name": device.name, "compute_capability": device.compute_text},
        "jetson": jetson,  # {"l4t", "jetpack"} on a Jetson, else null
        "onnx": {"file": config.onnx_path.name, "sha256": onnx_sha256, "opset": config.opset},
        "precision": {
            "name": config.precision,
            "fp16": config.fp16,
            "int8": config.int8,
            "fp8": config.fp8,
            "tf32": config.tf32,
            "typing": "strong" if config.strongly_typed else "weak",
        },
        "dla_core": config.dla_core,
        "max_batch": config.max_batch,
        "profile": {"input": config.input_name, "min": list(lo), "opt": list(opt), "max": list(hi)},
        "workspace_bytes": config.target.workspace_bytes,
        "plan": {"file": config.paths.plan.name, "bytes": plan_bytes},
        "build_seconds": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "zipvlm_version": zipvlm_version,
    }


def _write_atomic(path: Path, data) -> None:
    """Write via a temporary file, so a killed build never leaves half a plan behind."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


def _parse(trt, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))  # from the file: external weights resolve next to it
    errors = [str(parser.get_error(i)).replace("\n", " ") for i in range(parser.num_errors)]
    for error in errors:
        log.error("TensorRT ONNX parser: %s", error)
    if not ok or errors:
        first = errors[0] if errors else "no error recorded"
        raise BackendError(
            f"TensorRT's ONNX parser rejected {onnx_path.name} ({len(errors)} error(s); "
            f"first: {first}); the build report lists the graph's ops"
        )


def builder_config(trt, builder, config: BuildConfig):
    """Precision flags (weakly typed only), workspace, the batch profile, DLA and the timing cache."""
    built = builder.create_builder_config()
    built.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.target.workspace_bytes)
    if not config.tf32:  # float32 means float32: TF32 matmuls (on by default) can reorder the kept tokens
        built.clear_flag(trt.BuilderFlag.TF32)
    if config.fp16 and not config.strongly_typed:
        built.set_flag(trt.BuilderFlag.FP16)
    if config.int8 and not config.strongly_typed:
        built.set_flag(trt.BuilderFlag.INT8)
    if config.fp8 and not config.strongly_typed:
        built.set_flag(trt.BuilderFlag.FP8)
    if config.dla_core is not None:
        built.default_device_type = trt.DeviceType.DLA
        built.DLA_core = config.dla_core
        built.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = builder.create_optimization_profile()
    profile.set_shape(config.input_name, *config.profile)
    built.add_optimization_profile(profile)
    cache_file = config.paths.timing_cache
    cache = built.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    if not built.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("%s was made on another device; starting an empty timing cache", cache_file.name)
        built.set_timing_cache(built.create_timing_cache(b""), ignore_mismatch=False)
    return built


def build_engine(
    trt,
    config: BuildConfig,
    device: DeviceFacts,
    jetson: dict[str, str | None] | None,
    onnx_sha256: str,
    zipvlm_version: str,
) -> BuildResult:
    """Parse, configure, build and save the plan, its timing cache and its sidecar JSON."""
    check_tensorrt_version(trt.__version__, config.opset)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    check_device(config, device, builder.num_DLA_cores)
    network = builder.create_network(0)  # explicit batch is the only mode; 11+ is always strongly typed
    _parse(trt, network, logger, config.onnx_path)
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if names != [config.input_name]:
        raise BackendError(
            f"TensorRT sees inputs {names} in {config.onnx_path.name}, expected [{config.input_name}]"
        )
    built = builder_config(trt, builder, config)
    log.info(
        "building the %s engine on %s (%s, batch 1..%d): several minutes on a Jetson",
        config.target.name,
        device.name,
        config.precision,
        config.max_batch,
    )
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, built)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise BackendError(
            f"TensorRT could not build {config.onnx_path.name} for {device.name} (its messages above say why)"
        )
    paths = config.paths
    paths.plan.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(paths.plan, serialized)
    _write_atomic(paths.timing_cache, built.get_timing_cache().serialize())
    plan_bytes = paths.plan.stat().st_size
    record = engine_record(
        config, trt.__version__, device, jetson, onnx_sha256, seconds, plan_bytes, zipvlm_version
    )
    _write_atomic(paths.meta, (json.dumps(record, indent=2) + "\n").encode())
    return BuildResult(paths.plan, paths.meta, seconds, plan_bytes)
