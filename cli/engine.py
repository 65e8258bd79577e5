"""`zipvlm engine`: check the vision graph, write the build report, then build the TensorRT plan.

The order is the point: arguments are checked first, the static checks and the
report need no TensorRT and run everywhere, and only then is TensorRT imported,
so a workstation without it still checks the graph and says where to build.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

from zipvlm.bundle.errors import ArgumentError, ZipvlmError
from zipvlm.bundle.format import INT8_GRAPH, Bundle
from zipvlm.engine.targets import TARGETS, build_plan, check_flags, is_strongly_typed


def register(commands) -> None:
    """Register `zipvlm engine` on the CLI's subparsers."""
    engine = commands.add_parser(
        "engine",
        help="build the TensorRT plan of a bundle's vision graph, on the target device",
        description="Check the bundle's vision graph (TensorRT-safe ops, static shapes, Q/DQ "
        "placement), write engines/vision.TARGET.report.txt with polygraphy's view of "
        "it, then build engines/vision.TARGET.plan with TensorRT 10 or 11 on this "
        "device, with its fingerprint in vision.TARGET.json and a timing cache beside "
        "it. TensorRT 11 is strongly typed: an FP16 plan builds from vision.fp16.onnx "
        "(zipvlm export --fp16), and the layers between Q/DQ run in float32. Without "
        "TensorRT or a GPU, the checks and report still run and the build stops with "
        "one line saying where to build.",
    )
    engine.add_argument("--bundle", type=Path, required=True, help="bundle written by zipvlm export")
    engine.add_argument(
        "--target",
        required=True,
        choices=list(TARGETS),
        help="jetson (AGX Orin / Orin NX), orin-nano, thor, or x86 (discrete GPU)",
    )
    engine.add_argument(
        "--fp16",
        action="store_true",
        help="FP16 kernels (the default; with --int8/--fp8, for the layers without "
        "Q/DQ; TensorRT 11: from vision.fp16.onnx, and not with --int8/--fp8)",
    )
    engine.add_argument(
        "--fp32",
        action="store_true",
        help="no FP16 and no TF32: slower; the selection's scores in full "
        "precision, as onnxruntime computes them",
    )
    engine.add_argument(
        "--int8",
        action="store_true",
        help="build from the Q/DQ graph vision.int8.onnx (TensorRT takes explicit quantization)",
    )
    engine.add_argument(
        "--calib",
        type=Path,
        metavar="FRAMES",
        help="with --int8 and no vision.int8.onnx yet: quantize with this frame set "
        "first (zipvlm calib quantize)",
    )
    engine.add_argument(
        "--fp8",
        action="store_true",
        help="build from an FP8 Q/DQ graph vision.fp8.onnx (thor; x86 with compute capability 8.9+)",
    )
    engine.add_argument("--dla", type=int, metavar="N", help="run on DLA core N, GPU fallback (jetson)")
    engine.add_argument(
        "--max-batch",
        type=int,
        default=1,
        metavar="N",
        help="largest batch of the optimization profile (1..N, optimised for 1; default 1)",
    )
    engine.set_defaults(handler=run_engine)


def zipvlm_version() -> str:
    try:
        return metadata.version("zipvlm")
    except metadata.PackageNotFoundError:
        return "unknown"


def _quantize(bundle: Path, frames: Path) -> None:
    """`zipvlm calib quantize`'s work, for --int8 --calib when the Q/DQ graph is not there yet."""
    try:
        from zipvlm.calib.quantize import quantize_bundle
    except ImportError as exc:
        raise ZipvlmError(
            f"--calib needs zipvlm.calib.quantize, which this install lacks ({exc}): "
            f"run zipvlm calib quantize --bundle {bundle} --frames {frames} where it "
            "is installed, then copy vision.int8.onnx here"
        ) from None
    print(f"quantizing the vision graph with the frames in {frames} (--calib)", flush=True)
    quantize_bundle(bundle, frames)


def run_engine(args: argparse.Namespace) -> int:
    from zipvlm.engine.report import run_static_checks
    from zipvlm.runtime.backends.device import Cuda, import_tensorrt, jetson_release, tensorrt_version

    bundle = args.bundle
    if args.fp16 and args.fp32:
        raise ArgumentError("--fp16 and --fp32 contradict each other: choose one")
    if args.calib is not None and not args.int8:
        raise ArgumentError("--calib FRAMES quantizes for --int8: add --int8 or drop --calib")
    flags = {
        "fp16": not args.fp32,
        "int8": args.int8,
        "fp8": args.fp8,
        "dla": args.dla,
        "max_batch": args.max_batch,
    }
    check_flags(args.target, **flags)  # before a long --calib quantization
    Bundle.open(bundle)  # a tampered or foreign bundle stops here
    if args.int8 and args.calib is not None:
        if (bundle / INT8_GRAPH).is_file():
            print(f"{INT8_GRAPH} exists: building from it (zipvlm calib quantize re-quantizes)")
        else:
            _quantize(bundle, args.calib)
    version_here = tensorrt_version()  # None without TensorRT: the graph TensorRT 10 reads is checked
    strongly_typed = version_here is not None and is_strongly_typed(version_here)
    config = build_plan(args.target, **flags, bundle=bundle, strongly_typed=strongly_typed)
    if strongly_typed:
        print(
            f"TensorRT {version_here} is strongly typed: the plan runs {config.onnx_path.name}'s own "
            f"types ({config.precision}; float32 layers without TF32)",
            flush=True,
        )
    opened = Bundle.open(bundle, verify_hashes=False)  # re-read: --calib may have added a graph
    version = zipvlm_version()
    report = run_static_checks(config, opened, version)
    print(
        f"static checks passed: {config.onnx_path.name}, {report.op_types} op types, Q/DQ placement "
        f"{report.qdq}; report in {report.path}",
        flush=True,
    )
    where = f"static checks passed, report in {report.path}"
    trt = import_tensorrt(
        f"build the engine on the target, e.g. on the Jetson: make engine "
        f"TARGET={args.target} BUNDLE={bundle}; {where}"
    )
    device = Cuda().device_facts(
        f"build on the target GPU (make engine TARGET={args.target} BUNDLE={bundle}); {where}"
    )
    from zipvlm.engine.build import build_engine

    result = build_engine(trt, config, device, jetson_release(), report.onnx_sha256, version)
    print(
        f"engine built, {result.seconds:.1f} s, {result.plan} ({result.plan_bytes / 1e6:.1f} MB); "
        f"fingerprint in {result.meta}"
    )
    return 0
