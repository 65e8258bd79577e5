"""The LLaVA-1.5 family for export: a fixed square tower cut at layer L, then its projector."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from zipvlm.bundle.errors import ArgumentError
from zipvlm.bundle.format import Bundle
from zipvlm.export.decoder import export_language, language_graphs
from zipvlm.export.family import GraphEntries
from zipvlm.export.manifest import describe_bundle, eos_token_ids
from zipvlm.models.llava import LlavaFolder, image_token_count, load_vision_graph, open_llava_folder
from zipvlm.models.visionzip import VisionZipConfig

# Module scopes (from the exporter's node metadata) that --fp16 runs in float16: everything
# before layer L, and the projector after the selection.
HALF_SCOPES = ("trunk.embeddings", "trunk.pre_norm", "trunk.layers.", "projector")


@dataclass(frozen=True)
class LlavaExport:
    folder: LlavaFolder
    half_scopes: tuple[str, ...] = HALF_SCOPES

    @classmethod
    def open(cls, path: Path, image_size: tuple[int, int] | None) -> LlavaExport:
        folder = open_llava_folder(path)
        if image_size is not None:
            side = folder.tower.image_size
            raise ArgumentError(
                f"--image-size fixes the grid of models whose input size varies; this folder's "
                f"{folder.tower.family} tower always takes {side}x{side} (every frame is resized to it): "
                "drop --image-size"
            )
        return cls(folder)

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def views(self) -> int | None:
        """One view per image: pixel_values (B, 3, H, W)."""
        return None

    @property
    def input_hw(self) -> tuple[int, int]:
        side = self.folder.tower.image_size
        return side, side

    def load_note(self, zip_config: VisionZipConfig | None) -> str:
        tower, folder = self.folder.tower, self.folder
        keeps = (
            f"keep D={zip_config.dominant} + C={zip_config.contextual}"
            if zip_config
            else f"no VisionZip ('{folder.select_strategy}' selection)"
        )
        return (
            f"{tower.family} tower, {tower.num_tokens} tokens, layer {tower.layer_index + 1} of "
            f"{tower.num_layers}; {keeps}: {image_token_count(folder, zip_config)} tokens -> "
            f"{folder.llm_hidden_size}-wide LLM"
        )

    def vision_graph(self, zip_config: VisionZipConfig | None) -> nn.Module:
        return load_vision_graph(self.folder, zip_config)

    def eos_token_ids(self) -> list[int]:
        return eos_token_ids(self.folder.path, self.folder.config.text_config)

    def describe(
        self, directory: Path, zip_config: VisionZipConfig | None, eos_ids: list[int], graphs: GraphEntries
    ) -> Bundle:
        count = image_token_count(self.folder, zip_config)
        return describe_bundle(directory, self.folder, zip_config, count, eos_ids, graphs)

    def export_language(self, out: Path, quant: str, eos_ids: list[int]) -> GraphEntries:
        export_language(self.folder, out, quant, eos_ids)
        return language_graphs(quant)
