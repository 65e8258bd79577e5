"""`zipvlm demo`: a tiny random LLaVA or Qwen2.5-VL, exported with VisionZip and verified, then
streamed to, offline."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zipvlm.export.pipeline import ExportOptions, export_bundle
from zipvlm.models.tiny import TinySpec, build_tiny_llava
from zipvlm.models.tiny_qwen import build_tiny_qwen25vl
from zipvlm.models.visionzip import VisionZipConfig

log = logging.getLogger("zipvlm.demo")

SYNTHETIC_SIZE = (640, 480)  # the synthetic source's frames: the camera of the grid families' demos
ANYRES_EXPORT = "--image-size 640x480 --dominant 54 --contextual 10 --out my.bundle"


@dataclass(frozen=True)
class DemoModel:
    name: str  # the tiny folder's name under the workdir
    description: str
    build: Callable[[Path], Path]
    options: dict[str, Any]  # ExportOptions beyond model, out
    real_export: str  # the export command line for a real folder of this family


DEMOS = {
    "llava": DemoModel(
        "tiny-clip-llama",
        "LLaVA (CLIP + Llama)",
        lambda path: build_tiny_llava(path, TinySpec(family="clip-llama")),
        {"zip": VisionZipConfig(54, 10)},
        "zipvlm export --model /path/to/llava-1.5-7b-hf --dominant 54 --contextual 10 --out my.bundle",
    ),
    # 640x480 frames, the synthetic camera's: 391 merged tokens, 43 of them kept.
    "qwen2.5-vl": DemoModel(
        "tiny-qwen2.5-vl",
        "Qwen2.5-VL",
        build_tiny_qwen25vl,
        {"zip": VisionZipConfig(36, 7), "image_size": SYNTHETIC_SIZE},
        "zipvlm export --model /path/to/Qwen2.5-VL-3B-Instruct --image-size 640x480 --dominant 36 "
        "--contextual 7 --out my.bundle",
    ),
    # Any-res views of 640x480 frames: 2x2 crops + the whole frame, (54, 10) per view: 320 tokens.
    "llava-next": DemoModel(
        "tiny-llava-next",
        "LLaVA-NeXT (CLIP + Llama, any-res views)",
        lambda path: build_tiny_llava(path, TinySpec(architecture="llava_next", max_positions=8192)),
        {"zip": VisionZipConfig(54, 10), "image_size": SYNTHETIC_SIZE},
        f"zipvlm export --model /path/to/llava-v1.6-vicuna-7b-hf {ANYRES_EXPORT}",
    ),
    "llava-onevision": DemoModel(
        "tiny-llava-onevision",
        "LLaVA-OneVision (SigLIP + Qwen2, any-res views)",
        lambda path: build_tiny_llava(
            path,
            TinySpec(
                family="siglip-qwen2", architecture="llava_onevision", image_size=384, max_positions=8192
            ),
        ),
        {"zip": VisionZipConfig(54, 10), "image_size": SYNTHETIC_SIZE},
        f"zipvlm export --model /path/to/llava-onevision-qwen2-0.5b-ov-hf {ANYRES_EXPORT}",
    ),
}


def run_demo(workdir: Path, seconds: float = 10.0, family: str = "llava") -> Path:
    """Build the family's tiny folder if absent, export it, stream to it; return the bundle."""
    demo = DEMOS[family]
    model = workdir / demo.name
    if not (model / "config.json").is_file():
        log.info("building a tiny random-weight %s in %s", demo.description, model)
        demo.build(model)
    bundle = workdir / f"{demo.name}.bundle"
    export_bundle(ExportOptions(model=model, out=bundle, **demo.options))
    _stream(bundle, seconds)
    log.info(
        "The tiny model has random weights: its answers are noise, only the timings mean "
        "something. For a real model run\n"
        "  %s\n"
        "  zipvlm stream --bundle my.bundle --source 0 --prompt 'Is the path clear?' --every 1",
        demo.real_export,
    )
    return bundle


def _stream(bundle: Path, seconds: float) -> None:
    """Stream the synthetic source through the bundle (no PyTorch), printing every answer."""
    from zipvlm.runtime.generation import GenerationOptions
    from zipvlm.runtime.grabber import FrameGrabber
    from zipvlm.runtime.pipeline import BundlePipeline
    from zipvlm.runtime.sources import open_reader, parse_source
    from zipvlm.runtime.stream import StreamOptions, stream_answers

    pipeline = BundlePipeline.open(bundle)
    options = StreamOptions("What is in the image?", every_s=0.5, generation=GenerationOptions(12))
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    log.info(
        "stream   synthetic 640x480 source at 30 fps for %.0f s, one question every %.1f s",
        seconds,
        options.every_s,
    )
    with FrameGrabber(open_reader(parse_source("synthetic"))) as grabber:
        timer.start()
        for answer in stream_answers(pipeline, grabber, options, stop):
            log.info("  %s", answer.line())
    timer.cancel()
    stats = grabber.stats
    log.info(
        "stream   %d frames captured, %d dropped (never asked about), %d bad",
        stats.frames,
        stats.dropped,
        stats.bad_frames,
    )
