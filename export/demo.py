"""`zipvlm demo`: a tiny random LLaVA, exported with VisionZip and verified, offline."""

from __future__ import annotations

import logging
from pathlib import Path

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
    log.info(
        "The tiny model has random weights: its tokens mean nothing. For a real model run\n"
        "  zipvlm export --model /path/to/llava-1.5-7b-hf --dominant 54 --contextual 10 --out my.bundle"
    )
    return bundle
