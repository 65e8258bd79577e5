"""What export needs of one model family's folder, and which family a folder holds.

`export_bundle` runs the same stages for every family (trace, check, verify, fp16,
decoder, bundle); a family supplies the vision graph module and its input size,
the bundle's description, and its language side. A new family is one more class
here with its encoder adapter in models/ (docs/design.md, "Model families").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from torch import nn

from zipvlm.bundle.format import Bundle
from zipvlm.models.checkpoint import read_config
from zipvlm.models.visionzip import VisionZipConfig

GraphEntries = dict[str, dict[str, Any]]  # manifest `graphs`: file name -> dtype, quantization, ...


class ExportFamily(Protocol):
    path: Path  # the model folder
    input_hw: tuple[int, int]  # (H, W) of the vision graph's pixel_values
    views: int | None  # any-res views per image: pixel_values (B, views, 3, H, W); None: (B, 3, H, W)
    half_scopes: tuple[str, ...]  # module scopes of the vision graph that --fp16 runs in float16

    def load_note(self, zip_config: VisionZipConfig | None) -> str:
        """The load stage's line: the tower, its tokens, what is kept."""
        ...

    def vision_graph(self, zip_config: VisionZipConfig | None) -> nn.Module:
        """pixel_values (B, 3, H, W) -> image_embeds (B, K, H_llm), keep_indices (B, D)."""
        ...

    def eos_token_ids(self) -> list[int]: ...

    def describe(
        self, directory: Path, zip_config: VisionZipConfig | None, eos_ids: list[int], graphs: GraphEntries
    ) -> Bundle:
        """The bundle written to `directory` (its files are hashed by `Bundle.write`)."""
        ...

    def export_language(self, out: Path, quant: str, eos_ids: list[int]) -> GraphEntries:
        """Write the decoder, embed.onnx (and any further stage) and genai_config.json to `out`."""
        ...


def open_family(model: Path, image_size: tuple[int, int] | None) -> ExportFamily:
    """The family adapter for the folder at `model` (one clear line for any other architecture)."""
    from zipvlm.export.anyres import AnyresExport
    from zipvlm.export.llava import LlavaExport
    from zipvlm.export.qwen import QwenExport
    from zipvlm.models.anyres import ANYRES_MODEL_TYPES
    from zipvlm.models.qwen25vl import MODEL_TYPE as QWEN

    model = Path(model)
    model_type = read_config(model).get("model_type")  # a bad folder or config.json: one line first
    if model_type == QWEN:
        return QwenExport.open(model, image_size)
    if model_type in ANYRES_MODEL_TYPES:
        return AnyresExport.open(model, image_size)
    return LlavaExport.open(model, image_size)
