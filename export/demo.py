"""`zipvlm demo`: a tiny random LLaVA, exported with VisionZip and verified, offline."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from zipvlm.export.pipeline import ExportOptions, export_bundle
from zipvlm.models.tiny import TinySpec, build_tiny_llava
from zipvlm.models.visionzip import VisionZipConfig

log = logging.getLogger("zipvlm.demo")


def run_demo(workdir: Path) -> Path:
    """Build the tiny CLIP+Llama folder if absent, export it, return the bundle path."""
    model = workdir / "tiny-clip-llama"
    if not (model / "config.json").is_file():
        log.info("building a tiny random-weight LLaVA (CLIP + Llama) in %s", model)
        build_tiny_llava(model, TinySpec(family="clip-llama"))
    bundle = workdir / "tiny-clip-llama.bundle"
    export_bundle(ExportOptions(model=model, out=bundle, zip=VisionZipConfig(54, 10)))
    _ask(bundle)
    log.info(
        "The tiny model has random weights: its tokens mean nothing. For a real model run\n"
        "  zipvlm export --model /path/to/llava-1.5-7b-hf --dominant 54 --contextual 10 --out my.bundle\n"
        "  zipvlm run --bundle my.bundle --image photo.jpg --prompt 'What is in the image?'"
    )
    return bundle


def _ask(bundle: Path) -> None:
    """One question about a drawn test frame, answered by the bundle without PyTorch."""
    from zipvlm.runtime.answer import BundlePipeline, GenerationOptions

    frame = np.full((480, 640, 3), 90, np.uint8)
    cv2.rectangle(frame, (80, 120), (300, 400), (40, 40, 200), -1)
    cv2.circle(frame, (470, 240), 90, (200, 160, 30), -1)
    cv2.putText(frame, "zipvlm", (200, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
    pipeline = BundlePipeline(bundle)
    question = "What is in the image?"
    answer = pipeline.ask(frame, pipeline.prompt_ids(question, None), GenerationOptions(16))
    log.info("run      question %r -> %d tokens %s", question, len(answer.token_ids),
             answer.token_ids)
    log.info("         %s", ", ".join(f"{k} {v}" for k, v in answer.timings_ms.items()))
