"""`zipvlm export`: a local Hugging Face folder to a verified bundle (PyTorch, lazily imported)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zipvlm.bundle.errors import ArgumentError

DEFAULT_DOMINANT, DEFAULT_CONTEXTUAL = 54, 10  # the paper's setting for 576-token LLaVA-1.5
MAX_SIDE = 8192  # --image-size: larger than any camera a robot streams from


def register(commands) -> None:
    export = commands.add_parser(
        "export",
        help="export a local LLaVA or Qwen2.5-VL folder to a bundle (vision.onnx with VisionZip inside)",
        description=(
            "Export a local Hugging Face folder (LLaVA-1.5 with a CLIP or SigLIP tower, or Qwen2.5-VL) "
            "to a bundle: vision.onnx = the vision encoder + VisionZip (+ projector), checked for "
            "TensorRT-safe ops and verified against PyTorch; the language model with its KV cache."
        ),
    )
    export.add_argument(
        "--model", type=Path, required=True, help="local Hugging Face folder (LLaVA or Qwen2.5-VL)"
    )
    export.add_argument(
        "--dominant",
        type=int,
        metavar="D",
        help=f"tokens kept by attention, CLS included on CLIP, merged tokens on Qwen2.5-VL "
        f"(default {DEFAULT_DOMINANT})",
    )
    export.add_argument(
        "--contextual",
        type=int,
        metavar="C",
        help=f"tokens merged from the rest (default {DEFAULT_CONTEXTUAL}; K = D + C visual tokens)",
    )
    export.add_argument(
        "--no-zip",
        action="store_true",
        help="full-token baseline: every token, as the model itself selects them",
    )
    export.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    export.add_argument(
        "--quant",
        choices=["none", "int8", "int4"],
        default="int8",
        help="decoder weights: int8 (default; dynamic, per channel), int4 "
        "(MatMulNBits, block 32) or none (float32); docs/benchmarks.md compares "
        "them",
    )
    export.add_argument(
        "--fp16", action="store_true", help="also write vision.fp16.onnx (float32 inputs/outputs)"
    )
    export.add_argument(
        "--image-size",
        type=image_size,
        metavar="WxH",
        help="the camera's frame size, e.g. 640x480: fixes the patch grid of models whose input size "
        "varies (Qwen2.5-VL: resized as its processor does, default 448x448), so the vision graph "
        "stays static",
    )
    export.set_defaults(handler=run_export)


def image_size(value: str) -> tuple[int, int]:
    """'640x480' -> (640, 480), for argparse (a bad value is argparse's one line)."""
    width, sep, height = value.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and 0 < int(width) <= MAX_SIDE >= int(height) > 0):
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT in pixels, each 1..{MAX_SIDE}, e.g. 640x480; got {value!r}"
        )
    return int(width), int(height)


def run_export(args: argparse.Namespace) -> int:
    from zipvlm.export.pipeline import ExportOptions, export_bundle
    from zipvlm.models.visionzip import VisionZipConfig

    if args.no_zip and (args.dominant is not None or args.contextual is not None):
        raise ArgumentError("--no-zip keeps every token: drop --dominant and --contextual")
    zip_config = (
        None
        if args.no_zip
        else VisionZipConfig(
            DEFAULT_DOMINANT if args.dominant is None else args.dominant,
            DEFAULT_CONTEXTUAL if args.contextual is None else args.contextual,
        )
    )
    options = ExportOptions(
        model=args.model,
        out=args.out,
        fp16=args.fp16,
        quant=args.quant,
        zip=zip_config,
        image_size=args.image_size,
    )
    summary = export_bundle(options)
    print(f"bundle ready: {summary.out} ({', '.join(summary.files)})")
    return 0
