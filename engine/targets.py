"""What each deployment target allows, and the resolved plan of one TensorRT build.

Pure: no TensorRT, no CUDA. `build_plan` turns command-line flags into a frozen
`BuildConfig` or one clear `ArgumentError`; `check_device` checks that plan
against the GPU found at build time. TensorRT takes quantization explicitly
(Q/DQ nodes in the graph), so `--int8` builds from `vision.int8.onnx` and
`--fp8` from `vision.fp8.onnx`, never from `vision.onnx` with a flag set.
TensorRT 11 goes further: it removed the precision flags, every network is
strongly typed, so FP16 too must be in the graph (`vision.fp16.onnx`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from zipvlm.bundle.errors import ArgumentError, BundleError
from zipvlm.bundle.format import FLOAT_GRAPH, FP8_GRAPH, FP16_GRAPH, INT8_GRAPH, EnginePaths
from zipvlm.runtime.backends import BackendError
from zipvlm.runtime.backends.device import DeviceFacts

GiB = 1 << 30


@dataclass(frozen=True)
class TargetProfile:
    name: str
    devices: str  # what the target is, for messages
    fp8: bool  # FP8 tensor cores on some or all of its GPUs
    fp8_min_compute: tuple[int, int] | None  # FP8 needs at least this compute capability
    dla_cores: int  # the most DLA cores a device of this target has (0: none)
    workspace_bytes: int  # TensorRT's workspace pool limit: unified memory is shared with the LLM
    compute: tuple[tuple[int, int], ...]  # compute capabilities of its GPUs; () = any discrete GPU


TARGETS: dict[str, TargetProfile] = {
    # Orin AGX has 2 DLA cores, Orin NX 16 GB 2, Orin NX 8 GB 1 (checked against the builder).
    "jetson": TargetProfile("jetson", "Jetson AGX Orin / Orin NX", False, None, 2, 2 * GiB, ((8, 7),)),
    "orin-nano": TargetProfile("orin-nano", "Jetson Orin Nano", False, None, 0, 1 * GiB, ((8, 7),)),
    # Thor reports 10.1 under CUDA 12.8 and 11.0 under CUDA 13; its TensorRT has no DLA.
    "thor": TargetProfile("thor", "Jetson Thor", True, None, 0, 8 * GiB, ((10, 1), (11, 0))),
    "x86": TargetProfile("x86", "an x86 host with a discrete NVIDIA GPU", True, (8, 9), 0, 4 * GiB, ()),
}


# TensorRT 10 (JetPack 6.1+, JetPack 7) and 11 (x86/SBSA, strongly typed) read the opset-18 graph;
# 8.6 (JetPack 6.0) reads opset <= 17 and 8.5 (JetPack 5) has no LayerNormalization (docs/deploy-jetson.md).
OLDEST_TENSORRT_MAJOR = 10
STRONGLY_TYPED_MAJOR = 11  # TensorRT 11 removed the FP16/INT8/FP8 builder flags: graphs carry their types


def tensorrt_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise BackendError(f"cannot read the TensorRT version '{version}' (tensorrt.__version__)") from None


def is_strongly_typed(version: str) -> bool:
    """True where TensorRT takes every tensor's precision from the graph, never from builder flags."""
    return tensorrt_major(version) >= STRONGLY_TYPED_MAJOR


def check_tensorrt_version(version: str, opset: int) -> None:
    """Refuse a TensorRT that cannot read the graph's opset."""
    if tensorrt_major(version) < OLDEST_TENSORRT_MAJOR:
        raise BackendError(
            f"TensorRT {version} cannot build this graph (opset {opset}; TensorRT 8.6/JetPack 6.0 reads "
            "opset <= 17, 8.5/JetPack 5 lacks LayerNormalization): use TensorRT 10 (JetPack 6.1+ or 7) "
            "or 11"
        )


@dataclass(frozen=True)
class BuildConfig:
    """Everything one `zipvlm engine` build needs, resolved and checked."""

    target: TargetProfile
    bundle: Path
    onnx_path: Path  # vision.onnx, or the Q/DQ graph for --int8/--fp8
    opset: int
    input_name: str
    fp16: bool  # FP16 kernels (with INT8/FP8: for the layers without Q/DQ; never when strongly typed)
    int8: bool
    fp8: bool
    dla_core: int | None  # None: GPU only; else this DLA core with GPU fallback
    max_batch: int
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # min, opt, max input shape
    strongly_typed: bool = False  # TensorRT 11+: precision from the graph's types, no builder flags

    @property
    def tf32(self) -> bool:
        """TF32 matmuls stay on (TensorRT's default) only for weakly typed FP16 builds: a strongly
        typed graph's float32 layers are the selection, kept in float32 on purpose."""
        return self.fp16 and not self.strongly_typed

    @property
    def paths(self) -> EnginePaths:
        return EnginePaths.of(self.bundle, self.target.name)

    @property
    def precision(self) -> str:
        """'fp16+int8', 'fp32', ...: the float precision first, then the quantized ones."""
        names = ["fp16" if self.fp16 else "fp32"] + [
            n for n, on in (("int8", self.int8), ("fp8", self.fp8)) if on
        ]
        return "+".join(names)


def target_profile(name: str) -> TargetProfile:
    if name not in TARGETS:
        close = difflib.get_close_matches(name, TARGETS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ArgumentError(f"--target {name} is not one of {', '.join(TARGETS)}{hint}")
    return TARGETS[name]


def graph_for(bundle: Path, int8: bool, fp8: bool, fp16: bool = False, strongly_typed: bool = False) -> Path:
    """The graph a build reads: TensorRT quantizes only where Q/DQ nodes say so, and a strongly
    typed TensorRT runs FP16 only where the graph's own types are float16."""
    name = (
        INT8_GRAPH if int8 else FP8_GRAPH if fp8 else FP16_GRAPH if fp16 and strongly_typed else FLOAT_GRAPH
    )
    return Path(bundle) / name


def check_flags(
    target: str, *, fp16: bool, int8: bool, fp8: bool, dla: int | None, max_batch: int
) -> TargetProfile:
    """The flags against the target, before any file is read (or quantized)."""
    profile = target_profile(target)
    if int8 and fp8:
        raise ArgumentError("--int8 and --fp8 each build from their own Q/DQ graph: choose one")
    if max_batch < 1:
        raise ArgumentError(f"--max-batch must be at least 1, got {max_batch}")
    if fp8 and not profile.fp8:
        raise ArgumentError(
            f"--fp8: {profile.devices} (--target {target}) has no FP8 tensor cores; use --int8 or --fp16"
        )
    if dla is not None:
        if profile.dla_cores == 0:
            raise ArgumentError(f"--dla: {profile.devices} (--target {target}) has no DLA; drop --dla")
        if not 0 <= dla < profile.dla_cores:
            raise ArgumentError(f"--dla {dla}: {profile.devices} has DLA cores 0..{profile.dla_cores - 1}")
        if not (fp16 or int8):
            raise ArgumentError("--dla: DLA runs FP16 or INT8 only; drop --fp32")
    return profile


def build_plan(
    target: str,
    *,
    fp16: bool,
    int8: bool,
    fp8: bool,
    dla: int | None,
    max_batch: int,
    bundle: Path,
    strongly_typed: bool = False,
) -> BuildConfig:
    """Resolve and check one build; every illegal combination is one ArgumentError.

    Strongly typed (TensorRT 11+), the layers between a Q/DQ graph's quantized ones run in
    that graph's float32, so `fp16` is dropped with --int8/--fp8 and the precision says so.
    """
    profile = check_flags(target, fp16=fp16, int8=int8, fp8=fp8, dla=dla, max_batch=max_batch)
    onnx_path = graph_for(bundle, int8, fp8, fp16, strongly_typed)
    _require_graph(onnx_path, int8, fp8)
    input_name, shape, opset = graph_input(onnx_path)
    rest = tuple(int(dim) for dim in shape[1:])  # graph_input checked them static
    uses_fp16 = fp16 and not (strongly_typed and (int8 or fp8))
    return BuildConfig(
        profile,
        Path(bundle),
        onnx_path,
        opset,
        input_name,
        uses_fp16,
        int8,
        fp8,
        dla,
        max_batch,
        ((1, *rest), (1, *rest), (max_batch, *rest)),
        strongly_typed,
    )


def _require_graph(path: Path, int8: bool, fp8: bool) -> None:
    if path.is_file():
        return
    bundle = path.parent
    if int8:
        raise ArgumentError(
            f"--int8 builds from the Q/DQ graph {path} (TensorRT takes explicit quantization), "
            f"which is missing: run zipvlm calib quantize --bundle {bundle} --frames FRAMES, "
            "or add --calib FRAMES"
        )
    if fp8:
        raise ArgumentError(
            f"--fp8 builds from an FP8 Q/DQ graph {path} (TensorRT uses FP8 only where Q/DQ nodes say "
            "so), which is missing and zipvlm does not write yet: quantize vision.onnx to FP8 Q/DQ "
            "(e.g. NVIDIA Model Optimizer ONNX PTQ) and save it there, or use --int8"
        )
    if path.name == FP16_GRAPH:
        raise ArgumentError(
            f"this TensorRT is strongly typed (11+: no FP16 builder flag), so an FP16 plan builds from "
            f"{path}, which is missing: re-export with zipvlm export ... --fp16 (float16 layers, "
            "selection in float32), or build --fp32"
        )
    raise BundleError(f"{bundle} has no {path.name}: re-export the bundle with zipvlm export")


def graph_input(path: Path) -> tuple[str, tuple[int | str, ...], int]:
    """(name, shape, default-domain opset) of the graph's one input; batch may be symbolic."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inputs = [
        vi for vi in model.graph.input if vi.name not in {init.name for init in model.graph.initializer}
    ]
    if len(inputs) != 1:
        raise BundleError(f"{path.name} has {len(inputs)} inputs; the vision graph takes one (pixel_values)")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims)
    if len(shape) < 2 or any(not isinstance(d, int) or d < 1 for d in shape[1:]):
        raise BundleError(
            f"{path.name}: input '{inputs[0].name}' has shape {list(shape)}; TensorRT "
            "profiles here need static shapes but batch"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return inputs[0].name, shape, opset


def check_device(config: BuildConfig, device: DeviceFacts, dla_cores_here: int) -> None:
    """The plan against the GPU found at build time: right target, FP8 and DLA available."""
    target = config.target
    if target.compute and device.compute not in target.compute:
        wanted = " or ".join(f"{a}.{b}" for a, b in target.compute)
        raise ArgumentError(
            f"--target {target.name} is {target.devices} (compute capability {wanted}); this GPU is "
            f"{device.name} ({device.compute_text}): pick the target that names it (x86 for a "
            "discrete GPU)"
        )
    if config.fp8 and target.fp8_min_compute and device.compute < target.fp8_min_compute:
        need = ".".join(map(str, target.fp8_min_compute))
        raise ArgumentError(
            f"--fp8 needs compute capability {need} or newer (Ada, Hopper, Blackwell); "
            f"{device.name} is {device.compute_text}: use --int8 or --fp16"
        )
    if config.dla_core is not None and config.dla_core >= dla_cores_here:
        raise ArgumentError(f"--dla {config.dla_core}: this {device.name} has {dla_cores_here} DLA core(s)")
