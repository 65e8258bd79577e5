"""Trace the vision graph module to `vision.onnx` (opset 18, dynamic batch only)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from zipvlm.export.onnx_io import PROTOBUF_LIMIT

OPSET = 18  # torch 2.13's exporter writes 18 whatever is asked; TensorRT 10 reads it
INPUT_NAMES = ["pixel_values"]
OUTPUT_NAMES = ["image_embeds", "keep_indices"]
MAX_BATCH = 64


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings and notes (e.g. "torchvision is not installed")."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        exporter_log.setLevel(level)


def export_vision_graph(
    graph: torch.nn.Module, input_hw: tuple[int, int], path: Path, views: int | None = None
) -> Path:
    """Export a vision graph module taking pixel_values (B, 3, H, W), or (B, views, 3, H, W) for
    an any-res graph, with torch's dynamo exporter; weights go to external data near 2 GB.

    The example has batch 2: a batch-1 example with a dynamic batch dim silently
    exports a static batch of 1.
    """
    example = torch.zeros(2, *([views] if views else []), 3, *input_hw)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_shapes={"pixel_values": {0: batch}},
            optimize=True,
            verbose=False,
        )
    weight_bytes = sum(p.numel() * p.element_size() for p in graph.parameters())
    program.save(str(path), external_data=weight_bytes > PROTOBUF_LIMIT * 0.9)
    return path
