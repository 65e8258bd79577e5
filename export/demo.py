"""`zipvlm demo`: a tiny random LLaVA, exported with VisionZip and verified, then streamed to, offline."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from zipvlm.export.pipeline import ExportOptions, export_bundle
from zipvlm.models.tiny import TinySpec, build_tiny_llava
from zipvlm.models.visionzip import VisionZipConfig

log = logging.getLogger("zipvlm.demo")


def run_demo(workdir: Path, seconds: float = 10.0) -> Path:
    """Build the tiny CLIP+Llama folder if absent, export it, stream to it; return the bundle."""
    model = workdir / "tiny-clip-llama"
    if not (model / "config.json").is_file():
        log.info("building a tiny random-weight LLaVA (CLIP + Llama) in %s", model)
        build_tiny_llava(model, TinySpec(family="clip-llama"))
    bundle = workdir / "tiny-clip-llama.bundle"
    export_bundle(ExportOptions(model=model, out=bundle, zip=VisionZipConfig(54, 10)))
    _stream(bundle, seconds)
    log.info(
        "The tiny model has random weights: its answers are noise, only the timings mean "
        "something. For a real model run\n"
        "  zipvlm export --model /path/to/llava-1.5-7b-hf --dominant 54 --contextual 10 --out my.bundle\n"
        "  zipvlm stream --bundle my.bundle --source 0 --prompt 'Is the path clear?' --every 1"
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
