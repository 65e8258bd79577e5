"""INT8 vision-graph benchmark: real-size CLIP-L/336 (random weights), onnxruntime CPU.

Takes the K=64 bundle that `python -m zipvlm.bench.language` caches (CLIP ViT-L/14-336
tower + Qwen2-0.5B-wide projector, VisionZip D=54, C=10), copies it to --out/bundle
(small files copied, big ones hard-linked: the cache is never written), collects a frame
set from the synthetic source, runs `zipvlm calib quantize` on it, then times
vision.onnx against vision.int8.onnx, batch 1, median of interleaved runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

from zipvlm.bench.report import machine, machine_line, markdown_table
from zipvlm.bench.vision import interleaved_medians, ort_timer
from zipvlm.bundle.format import FLOAT_GRAPH, INT8_GRAPH, MANIFEST_NAME, Bundle, is_bundle
from zipvlm.calib.collect import CollectOptions, collect
from zipvlm.calib.frames import load_frame_set
from zipvlm.calib.quantize import QuantizeOptions, quantize_bundle
from zipvlm.runtime.providers import INT8_DISABLED_OPTIMIZERS

SOURCE_BUNDLE = Path("artifacts/bench/cache/Qwen2-0.5B/bundle-int8")  # K = 64 vision.onnx
LINK_OVER = 10 * 1024**2

INT8_COLUMNS = (
    ("tower", "vision graph", "{}"),
    ("kept", "K", "{}"),
    ("float_ms", "float32 ms", "{:.0f}"),
    ("int8_ms", "INT8 Q/DQ ms", "{:.0f}"),
    ("speedup", "float/INT8", "{:.2f}x"),
    ("int8_no_cse_ms", "INT8 ms, ORT CSE off", "{:.0f}"),
    ("speedup_no_cse", "float/INT8, CSE off", "{:.2f}x"),
    ("cosine_mean", "cosine mean", "{:.4f}"),
    ("cosine_min", "cosine min", "{:.4f}"),
    ("keep_iou_mean", "keep IoU mean", "{:.3f}"),
    ("keep_iou_min", "keep IoU min", "{:.3f}"),
    ("kernels_cosine_mean", "cosine, ORT int8 kernels", "{:.4f}"),
    ("kernels_keep_iou_mean", "keep IoU, ORT int8 kernels", "{:.3f}"),
    ("frames", "calib / held-out frames", "{}"),
)


def working_bundle(source: Path, target: Path) -> Path:
    """A bundle at `target` that shares `source`'s big files by hard link and owns its manifest.

    Not by symlink: onnxruntime refuses external data (decoder.onnx.data) that resolves
    outside the model's folder, so `zipvlm run` could not load such a bundle. Nothing writes
    a bundle's files in place (quantize writes new ones), so the cache stays untouched.
    """
    if not is_bundle(source):
        raise SystemExit(f"{source} is not a bundle: run `python -m zipvlm.bench.language` first")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for file in source.iterdir():
        if file.is_file() and file.stat().st_size > LINK_OVER and file.name != MANIFEST_NAME:
            try:
                os.link(file.resolve(), target / file.name)
            except OSError:  # another filesystem: copy
                shutil.copy2(file, target / file.name)
        elif file.is_file():
            shutil.copy2(file, target / file.name)
    return target


def time_graphs(bundle: Path, frame_set: Path, repeats: int, threads: int) -> dict[str, float]:
    """Median batch-1 ms of the graphs on one preprocessed frame, runs interleaved."""
    frames = load_frame_set(frame_set)
    pixels = next(frames.pixel_values(frames.frames[:1], Bundle.open(bundle, verify_hashes=False)))
    runners = {
        "float": ort_timer(bundle / FLOAT_GRAPH, threads),
        "int8": ort_timer(bundle / INT8_GRAPH, threads),
        # as `--vision-graph int8` runs it: common-subexpression elimination off
        "int8_no_cse": ort_timer(bundle / INT8_GRAPH, threads, disabled_optimizers=INT8_DISABLED_OPTIMIZERS),
    }
    return interleaved_medians(runners, pixels, repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zipvlm.bench.int8",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", type=Path, default=SOURCE_BUNDLE, help="bundle to quantize (read only)")
    parser.add_argument("--frames", type=int, default=32, help="frames collected (default 32)")
    parser.add_argument("--holdout", type=float, default=0.25, help="share held out (default 0.25)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per graph (median)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for onnxruntime")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/int8"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="  %(message)s")

    bundle = working_bundle(args.bundle, args.out / "bundle")
    collect(CollectOptions("synthetic", args.frames, args.out / "frames", every=0.1))
    report = quantize_bundle(
        bundle, args.out / "frames", QuantizeOptions(holdout=args.holdout, threads=args.threads)
    )
    ms = time_graphs(bundle, args.out / "frames", args.repeats, args.threads)
    row = {
        "tower": "CLIP ViT-L/14-336 -> 896 (random weights)",
        "kept": Bundle.open(bundle, verify_hashes=False).selection.num_image_tokens,
        "float_ms": ms["float"],
        "int8_ms": ms["int8"],
        "speedup": ms["float"] / ms["int8"],
        "int8_no_cse_ms": ms["int8_no_cse"],
        "speedup_no_cse": ms["float"] / ms["int8_no_cse"],
        "cosine_mean": report.cosine.mean,
        "cosine_min": report.cosine.min,
        "keep_iou_mean": report.keep_iou.mean,
        "keep_iou_min": report.keep_iou.min,
        "kernels_cosine_mean": report.cpu_int8_kernels.cosine.mean,
        "kernels_keep_iou_mean": report.cpu_int8_kernels.keep_iou.mean,
        "frames": f"{report.frames['calibration']} / {report.frames['held_out']}",
    }
    meta = {
        "machine": machine(),
        "repeats": args.repeats,
        "threads": args.threads,
        "batch": 1,
        "frames": "synthetic source, frames >= 0.1 s apart",
        "bundle": str(args.bundle),
        "sizes_mb": {
            name: round((bundle / name).stat().st_size / 1024**2, 1) for name in (FLOAT_GRAPH, INT8_GRAPH)
        },
        "report": report.to_json(),
    }
    (args.out.parent / "int8.json").write_text(json.dumps({"meta": meta, "rows": [row]}, indent=2))
    print(machine_line())
    print(markdown_table([row], INT8_COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
