"""`zipvlm export`: a model folder in, a verified bundle out, one log line per stage.

The bundle is written to a temporary sibling directory and moved into place only
after every check passed, so a failed export never leaves a half bundle or
destroys the previous one.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zipvlm.bundle.errors import ArgumentError
from zipvlm.bundle.format import (
    DECODER_GRAPH,
    FLOAT_GRAPH,
    FP8_GRAPH,
    FP16_GRAPH,
    GENAI_CONFIG,
    INT8_GRAPH,
    Bundle,
    is_bundle,
)
from zipvlm.bundle.graph_checks import check_vision_graph
from zipvlm.export.family import GraphEntries, open_family
from zipvlm.export.fp16 import FP16_TOLERANCE, convert_to_fp16, verify_fp16
from zipvlm.export.manifest import copy_model_files
from zipvlm.export.verify import sample_pixels, verify_against_torch
from zipvlm.export.vision import export_vision_graph
from zipvlm.models.visionzip import VisionZipConfig
from zipvlm.runtime.agreement import kept_rows

log = logging.getLogger("zipvlm.export")

VERIFY_BATCH = 2
VISION_GRAPHS = (FLOAT_GRAPH, FP16_GRAPH, INT8_GRAPH, FP8_GRAPH)


@dataclass(frozen=True)
class ExportOptions:
    model: Path  # the user's local Hugging Face folder
    out: Path  # bundle directory to write
    zip: VisionZipConfig | None  # None: every token, the model's own selection (--no-zip)
    fp16: bool = False  # also write vision.fp16.onnx
    # Decoder weights: "int8" (dynamic, per channel; the fastest end to end on CPU, see
    # `make bench`), "int4" (MatMulNBits) or "none" (float32).
    quant: str = "int8"
    # (width, height) of the camera: fixes the patch grid of models whose input size varies
    # (Qwen2.5-VL, LLaVA-NeXT/OneVision). None: the model's fixed square input.
    image_size: tuple[int, int] | None = None
    # A bundle exported from the same folder with the same `quant`: its language side (decoder,
    # embed.onnx, any positions stage, genai_config.json) is linked instead of built again, since
    # only the vision graph differs between camera sizes and selections (benchmarks, tests).
    language_from: Path | None = None


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    max_abs_diff: float
    files: list[str]


@contextmanager
def stage(name: str) -> Iterator[list[str]]:
    """Time a stage and log one line: name, seconds, and what the stage appended."""
    start = time.perf_counter()
    note: list[str] = []
    yield note
    log.info("%-7s %6.1f s  %s", name, time.perf_counter() - start, " ".join(note))


def human_size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def export_bundle(options: ExportOptions) -> ExportSummary:
    """Load, trace, check, verify and write the bundle; raise ZipvlmError on user errors."""
    check_out_dir(options.out)
    with stage("load") as note:
        family = open_family(options.model, options.image_size)
        graph = family.vision_graph(options.zip)
        note.append(family.load_note(options.zip))

    options.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{options.out.name}.", dir=options.out.parent))
    work.chmod(0o755)  # mkdtemp's 0700 would make the bundle private to this user
    try:
        vision = work / FLOAT_GRAPH
        with stage("trace") as note:
            export_vision_graph(graph, family.input_hw, vision, family.views)
            note.append(f"saved {vision.name} ({human_size(vision)})")
        eos = family.eos_token_ids()
        graphs: GraphEntries = {FLOAT_GRAPH: {"dtype": "float32", "quantization": "none"}}
        bundle = family.describe(work, options.zip, eos, graphs)  # `graphs` grows with each stage
        expected = bundle.vision_io()
        with stage("check") as note:
            report = check_vision_graph(vision, expected)
            note.append(
                f"onnx.checker ok; {len(report.op_counts)} op types, none of NonZero/Loop/If/"
                f"Compress/Unique; TopK x{report.op_counts.get('TopK', 0)} with constant K; "
                f"static shapes but batch"
            )
        pixels = sample_pixels(VERIFY_BATCH, family.input_hw, views=family.views)
        with stage("verify") as note:
            result = verify_against_torch(graph, vision, pixels)
            note.append(
                f"onnxruntime vs PyTorch on {result.batch} images: kept indices identical, "
                f"max |image_embeds diff| {result.max_abs_diff:.1e} (atol 1e-04)"
            )
        if options.fp16:
            with stage("fp16") as note:
                half = convert_to_fp16(vision, work / FP16_GRAPH, family.half_scopes)
                check_vision_graph(half, expected)  # what TensorRT 11 builds FP16 plans from
                fp16 = verify_fp16(vision, half, pixels.numpy(), rows=kept_rows(bundle))
                note.append(
                    f"saved {half.name} ({human_size(half)}, checks passed); vs float32: kept-index IoU "
                    f"{fp16.keep_iou:.3f}, cosine on shared kept tokens {fp16.cosine:.5f} "
                    f"(tolerance IoU >= {FP16_TOLERANCE.keep_iou}, cosine >= {FP16_TOLERANCE.cosine})"
                )
            graphs[FP16_GRAPH] = {"dtype": "float16", "quantization": "none", "io_dtype": "float32"}
        with stage("decoder") as note:
            if options.language_from is None:
                language = family.export_language(work, options.quant, eos)
            else:
                language = link_language(Bundle.open(options.language_from), family.path, options.quant, work)
            decoder = work / DECODER_GRAPH
            weights = work / "decoder.onnx.data"
            stages = [name for name in language if name != DECODER_GRAPH]
            note.append(
                f"saved decoder.onnx ({human_size(weights if weights.exists() else decoder)}, "
                f"{options.quant if options.quant != 'none' else 'float32'} weights) and "
                f"{' and '.join(stages)}, chained in genai_config.json"
            )
        graphs.update(language)
        with stage("bundle") as note:
            copy_model_files(family.path, work)
            written = bundle.write()
            _replace_dir(work, options.out)
            note.append(f"manifest.json with sha256 of {len(written.files)} files -> {options.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportSummary(out=options.out, max_abs_diff=result.max_abs_diff, files=sorted(written.files))


def link_language(source: Bundle, folder: Path, quant: str, out: Path) -> GraphEntries:
    """Hard-link (else copy) the language side of `source` into `out`; its graph entries."""
    decoder = source.graphs.get(DECODER_GRAPH, {})
    if source.source_model != str(folder.resolve()) or decoder.get("quantization") != quant:
        raise ArgumentError(
            f"{source.path} was exported from {source.source_model} with --quant "
            f"{decoder.get('quantization')}: its language side does not fit {folder} with --quant {quant}"
        )
    language = {name: dict(entry) for name, entry in source.graphs.items() if name not in VISION_GRAPHS}
    for name in [*language, f"{DECODER_GRAPH}.data", GENAI_CONFIG]:
        if source.has(name):
            try:
                os.link(source.file(name), out / name)
            except OSError:
                shutil.copy2(source.file(name), out / name)
    return language


def check_out_dir(out: Path) -> None:
    """--out must be creatable, and if it exists, an empty directory or a bundle."""
    if out.exists():
        if not out.is_dir():
            raise ArgumentError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()) and not is_bundle(out):
            raise ArgumentError(
                f"--out {out} exists and is not a zipvlm bundle; choose a new path or remove it"
            )
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ArgumentError(f"cannot create --out {out}: {parent} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise ArgumentError(f"cannot write --out {out}: {exc.strerror} ({parent})") from None


def _replace_dir(source: Path, target: Path) -> None:
    """Move the finished bundle into place, replacing an older bundle there."""
    if target.exists():
        shutil.rmtree(target)
    source.rename(target)
