"""`zipvlm calib collect | quantize`: argparse setup and handlers (heavy imports stay lazy)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zipvlm.cli.options import add_bundle


def register(commands: argparse._SubParsersAction) -> None:
    """Register `calib` and its two subcommands on the top-level subparsers."""
    from zipvlm.calib.collect import DEFAULT_EVERY, DEFAULT_MIN_DIFF, THUMBNAIL

    calib = commands.add_parser(
        "calib",
        help="frame sets for INT8 calibration, and the INT8 Q/DQ vision graph",
        description="Collect calibration frames from your own camera or videos, then quantize a "
        "bundle's vision graph to INT8 (explicit Q/DQ, for TensorRT) with them.",
    )
    steps = calib.add_subparsers(dest="calib_command", required=True, parser_class=type(calib))

    collect = steps.add_parser(
        "collect",
        help="sample N distinct frames from a video, image folder, camera or stream",
        description=(
            "Sample N frames into a frame set: PNG files (lossless, as captured) and manifest.json "
            "(source, frame indices, sha256 per file, the sampling rule). A video file is sampled at "
            "N evenly spaced frame numbers, an image folder at N evenly spaced files in name order "
            "(the same frames every time); a live source (camera, URL, GStreamer, 'synthetic') "
            "gives frames at least --every seconds apart as they arrive. Near-duplicates are "
            f"dropped: a frame whose {THUMBNAIL}x{THUMBNAIL} grayscale thumbnail differs from an "
            "already kept one by a mean absolute difference below --min-diff (0-255 scale). If a "
            "file or folder has duplicates, the candidates are refined (2N, 4N, ... evenly spaced) "
            "until N distinct frames exist; fewer than N distinct frames is an error. Frames are "
            "not preprocessed here: each bundle applies its own preprocessing when it uses them, "
            "so one frame set serves several bundles. Re-running skips files already written "
            "byte for byte."
        ),
    )
    collect.add_argument(
        "--source",
        required=True,
        metavar="SRC",
        help="video file, image folder, camera index (0), rtsp:// or http:// URL, "
        "GStreamer pipeline (with '!'), or 'synthetic'",
    )
    collect.add_argument("--frames", type=int, required=True, metavar="N", help="distinct frames to keep")
    collect.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FRAMES",
        help="frame-set directory to write (new, empty, or an earlier frame set)",
    )
    collect.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help=f"live sources: at least SECONDS between candidate frames (default "
        f"{DEFAULT_EVERY:g}); files and folders are spread over their length",
    )
    collect.add_argument(
        "--min-diff",
        type=float,
        default=DEFAULT_MIN_DIFF,
        metavar="X",
        help=f"near-duplicate threshold, mean |difference| of {THUMBNAIL}x{THUMBNAIL} "
        f"gray thumbnails on 0-255 (default {DEFAULT_MIN_DIFF:g}; 0 keeps all)",
    )
    collect.set_defaults(handler=_cmd_collect)

    quantize = steps.add_parser(
        "quantize",
        help="write BUNDLE/vision.int8.onnx (Q/DQ) calibrated on a frame set, and its accuracy report",
        description=(
            "Quantize the bundle's vision graph to INT8 with explicit QuantizeLinear/"
            "DequantizeLinear (onnxruntime quantize_static, QDQ; weights per channel, activations "
            "per tensor, symmetric, MinMax). VisionZip's selection (the attention scores of layer "
            "L, TopK, gathers, scatters, the merge), every Softmax and the patch embedding stay "
            "float. The frames are preprocessed with this bundle's own preprocessing and split "
            "into calibration and held-out frames (evenly spaced, deterministic). Writes "
            "vision.int8.onnx (same inputs and outputs as vision.onnx), checks its op set and Q/DQ "
            "placement, records it in manifest.json, and writes reports/int8.json: cosine of "
            "image_embeds and IoU of keep_indices, INT8 vs float, on the held-out frames."
        ),
    )
    add_bundle(quantize)
    quantize.add_argument(
        "--frames",
        type=Path,
        required=True,
        metavar="FRAMES",
        help="frame set written by zipvlm calib collect",
    )
    quantize.add_argument(
        "--holdout",
        type=float,
        default=0.25,
        metavar="F",
        help="share of the frames held out of calibration for the report (default 0.25)",
    )
    quantize.set_defaults(handler=_cmd_quantize)


def _cmd_collect(args: argparse.Namespace) -> int:
    from zipvlm.calib.collect import CollectOptions, collect

    result = collect(CollectOptions(args.source, args.frames, args.out, args.every, args.min_diff))
    print(
        f"frame set ready: {result.out} ({result.frames} frames from {result.candidates} candidates, "
        f"{result.written} written)"
    )
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from zipvlm.calib.quantize import REPORT, QuantizeOptions, quantize_bundle

    report = quantize_bundle(args.bundle, args.frames, QuantizeOptions(holdout=args.holdout))
    print(
        f"{args.bundle / report.graph}: cosine mean {report.cosine.mean:.4f} (min "
        f"{report.cosine.min:.4f}), keep IoU mean {report.keep_iou.mean:.3f} (min "
        f"{report.keep_iou.min:.3f}) on {report.frames['held_out']} held-out frames; "
        f"report {args.bundle / REPORT}"
    )
    return 0
