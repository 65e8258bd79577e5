"""`zipvlm calib quantize`: an INT8 Q/DQ vision graph calibrated on a frame set.

onnxruntime's quantize_static in QDQ format (explicit QuantizeLinear/DequantizeLinear,
what TensorRT 10 prefers): weights int8 symmetric per output channel, activations
int8 symmetric per tensor (TensorRT takes zero points of 0 only), MinMax ranges.
Only MatMul/Gemm/Conv are quantized; VisionZip's selection and every Softmax stay
float (calib/selection.py). The frames are split into calibration and held-out
frames; the report compares INT8 with float on the held-out ones.

Memory: MinMax calibration adds a ReduceMin/ReduceMax pair per calibrated tensor, so
each frame leaves two scalars per tensor, not the tensor (calibrate.py,
MinMaxCalibrater.augment_graph); frames are preprocessed one at a time. The histogram
methods keep whole tensors and are not used. (onnxruntime 1.32's
CalibMaxIntermediateOutputs drops each full chunk without merging its ranges, so it
is not used either.)
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from zipvlm.bundle.format import FLOAT_GRAPH, INT8_GRAPH, Bundle
from zipvlm.bundle.graph_checks import QDQ_OPS, check_qdq_placement, check_vision_graph
from zipvlm.calib.frames import Frame, FrameSet, load_frame_set
from zipvlm.calib.selection import QUANTIZED_OPS, float_nodes
from zipvlm.runtime.agreement import KeptRows, cosine, dominant_rows, keep_iou, kept_rows, shared_token_cosine
from zipvlm.runtime.logs import quiet_root_logger
from zipvlm.runtime.providers import INT8_DISABLED_OPTIMIZERS, ort_session

log = logging.getLogger("zipvlm.calib")

REPORT = Path("reports") / "int8.json"
EXTERNAL_DATA_OVER = int(1.8 * 1024**3)  # protobuf's 2 GB limit, with room to spare


@dataclass(frozen=True)
class QuantizeOptions:
    holdout: float = 0.25  # share of the frames kept out of calibration, for the report
    threads: int = 0  # onnxruntime intra-op threads; 0: all cores


@dataclass(frozen=True)
class Stat:
    mean: float
    min: float

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        return cls(float(np.mean(values)), float(np.min(values)))


@dataclass(frozen=True)
class Accuracy:
    """INT8 against float on the held-out frames, per frame, then mean and min."""

    cosine: Stat  # image_embeds rows of the dominant tokens both graphs kept, matched by index
    keep_iou: Stat  # |A ∩ B| / |A ∪ B| of the keep_indices sets
    cosine_all_rows: Stat  # all of image_embeds as the LLM gets it: a swapped token shifts rows


@dataclass(frozen=True)
class Int8Report:
    """What reports/int8.json holds.

    `cosine` and `keep_iou` are the Q/DQ graph as written: onnxruntime CPU with graph
    optimizations off, so each QuantizeLinear/DequantizeLinear runs and each layer
    multiplies the de-quantized values, the arithmetic TensorRT's int8 kernels
    reproduce. `cpu_int8_kernels` is the same graph through onnxruntime's fused int8
    kernels, as `--vision-graph int8` runs it (common-subexpression elimination off),
    which on AVX2 without VNNI saturate 16-bit sums of products.
    """

    graph: str
    cosine: Stat
    keep_iou: Stat
    cosine_all_rows: Stat
    cpu_int8_kernels: Accuracy
    frames: dict[str, Any]
    method: dict[str, Any]
    timing_s: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Frames:
    """onnxruntime's CalibrationDataReader over preprocessed frames, one at a time (bounded memory)."""

    def __init__(self, frames: Iterator[np.ndarray], count: int, input_name: str):
        self.frames = iter(tqdm(frames, total=count, desc="calibrate", unit="frame", disable=None))
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        pixels = next(self.frames, None)
        return None if pixels is None else {self.input_name: pixels}


def quantize_graph(source: Path, target: Path, calibration: _Frames) -> int:
    """Write the Q/DQ graph to `target`; return how many nodes were kept in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    keep_float = float_nodes(onnx.load(str(source), load_external_data=False))
    with quiet_root_logger():
        quantize_static(
            str(source),
            str(target),
            calibration,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
            use_external_data_format=source.stat().st_size > EXTERNAL_DATA_OVER,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                # One Q/DQ pair per consumer (q, k and v share their input): a shared DQ
                # keeps onnxruntime from fusing those MatMuls into int8 kernels.
                "DedicatedQDQPair": True,
                # Q/DQ on the inputs of each layer only, as TensorRT places them: an
                # output Q/DQ would sit between q·kᵀ and its Softmax.
                "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS,
            },
        )
    return len(keep_float)


def accuracy(
    reference: list[tuple[np.ndarray, np.ndarray]],
    quantized: list[tuple[np.ndarray, np.ndarray]],
    rows: KeptRows = dominant_rows,
) -> Accuracy:
    """Compare per-frame (image_embeds (K, H), keep_indices (D,) or (V, D)) pairs of two graphs."""
    cosines, ious, whole = [], [], []
    for (ref_embeds, ref_keep), (q_embeds, q_keep) in zip(reference, quantized, strict=True):
        cosines.append(shared_token_cosine(ref_embeds, ref_keep, q_embeds, q_keep, rows))
        ious.append(keep_iou(ref_keep, q_keep, rows))
        whole.append(cosine(ref_embeds, q_embeds))
    return Accuracy(Stat.of(cosines), Stat.of(ious), Stat.of(whole))


def compare(
    float_path: Path,
    int8_path: Path,
    frame_set: FrameSet,
    frames: tuple[Frame, ...],
    bundle: Bundle,
    threads: int = 0,
) -> tuple[Accuracy, Accuracy]:
    """INT8 against float on `frames`: (Q/DQ as written, onnxruntime's fused int8 kernels as
    `--vision-graph int8` runs them)."""
    # Q/DQ as written (no fusion into int8 kernels: every Q/DQ runs), then as the runtime runs it.
    sessions = [
        ort_session(float_path, threads=threads),
        ort_session(int8_path, threads=threads, optimize=False),
        ort_session(int8_path, threads=threads, disabled_optimizers=INT8_DISABLED_OPTIMIZERS),
    ]
    outputs: list[list[tuple[np.ndarray, np.ndarray]]] = [[], [], []]
    pixels = frame_set.pixel_values(frames, bundle)
    for batch in tqdm(pixels, total=len(frames), desc="compare", unit="frame", disable=None):
        for session, out in zip(sessions, outputs, strict=True):
            embeds, keep = session.run(["image_embeds", "keep_indices"], {"pixel_values": batch})
            out.append((embeds[0], keep[0]))
    rows = kept_rows(bundle)
    return accuracy(outputs[0], outputs[1], rows), accuracy(outputs[0], outputs[2], rows)


def quantize_bundle(bundle: Path, frames: Path, options: QuantizeOptions = QuantizeOptions()) -> Int8Report:
    """Write BUNDLE/vision.int8.onnx and BUNDLE/reports/int8.json; record both in the manifest.

    Raises ZipvlmError (one line) for a bad bundle or frame set, ExportError when the
    quantized graph fails the op-set or Q/DQ placement checks.
    """
    import onnxruntime as ort

    opened, frames = Bundle.open(bundle), Path(frames)
    bundle = opened.path
    frame_set = load_frame_set(frames)
    calibration, held_out = frame_set.split(options.holdout)
    source = bundle / FLOAT_GRAPH
    timing: dict[str, float] = {}

    work = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.int8.", dir=bundle.parent))
    try:
        start = time.perf_counter()
        reader = _Frames(frame_set.pixel_values(calibration, opened), len(calibration), "pixel_values")
        kept_float = quantize_graph(source, work / INT8_GRAPH, reader)
        timing["calibrate_and_quantize"] = time.perf_counter() - start
        log.info(
            "quantize %6.1f s  %d calibration frames; %d nodes kept in float (selection, "
            "Softmax, patch embedding)",
            timing["calibrate_and_quantize"],
            len(calibration),
            kept_float,
        )

        start = time.perf_counter()
        graph = check_vision_graph(work / INT8_GRAPH, opened.vision_io(), extra_ops=QDQ_OPS)
        check_qdq_placement(onnx.load(str(work / INT8_GRAPH), load_external_data=False))
        timing["check"] = time.perf_counter() - start
        log.info(
            "check    %6.1f s  op set ok; %d QuantizeLinear, %d DequantizeLinear; per-channel "
            "weights; no Q/DQ next to the selection; TopK K constant",
            timing["check"],
            graph.op_counts.get("QuantizeLinear", 0),
            graph.op_counts.get("DequantizeLinear", 0),
        )

        start = time.perf_counter()
        written, kernels = compare(source, work / INT8_GRAPH, frame_set, held_out, opened, options.threads)
        timing["compare"] = time.perf_counter() - start
        for path in work.iterdir():
            path.rename(bundle / path.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    method = {
        "tool": f"onnxruntime.quantization.quantize_static (onnxruntime {ort.__version__})",
        "format": "QDQ",
        "quantized_ops": QUANTIZED_OPS,
        "nodes_kept_float": kept_float,
        "weights": "int8 symmetric, per output channel",
        "activations": "int8 symmetric, per tensor",
        "calibration": "MinMax",
    }
    report = Int8Report(
        graph=INT8_GRAPH,
        cosine=written.cosine,
        keep_iou=written.keep_iou,
        cosine_all_rows=written.cosine_all_rows,
        cpu_int8_kernels=kernels,
        frames={
            "calibration": len(calibration),
            "held_out": len(held_out),
            "frame_set": str(frames.resolve()),
            "source": frame_set.source,
        },
        method=method,
        timing_s={k: round(v, 3) for k, v in timing.items()},
    )
    (bundle / REPORT).parent.mkdir(exist_ok=True)
    (bundle / REPORT).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    opened.with_graph(
        INT8_GRAPH,
        {
            "dtype": "int8",
            "quantization": "qdq-static",
            "io_dtype": "float32",
            "report": str(REPORT),
            "calibration_frames": len(calibration),
        },
    ).write()
    log.info(
        "compare  %6.1f s  %d held-out frames: cosine mean %.4f min %.4f, keep IoU mean %.3f "
        "min %.3f (onnxruntime's int8 kernels: %.4f, %.3f) -> %s",
        timing["compare"],
        len(held_out),
        written.cosine.mean,
        written.cosine.min,
        written.keep_iou.mean,
        written.keep_iou.min,
        kernels.cosine.mean,
        kernels.keep_iou.mean,
        bundle / REPORT,
    )
    return report
