"""The LLaVA-NeXT / LLaVA-OneVision family for export: the camera's size fixes the views
(models/anyres.py); each view runs LLaVA-1.5's graph, then a layout orders the tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from zipvlm.bundle.anyres import AnyresGeometry
from zipvlm.bundle.format import Bundle
from zipvlm.export.family import GraphEntries
from zipvlm.export.llava import LlavaExport
from zipvlm.export.manifest import describe_bundle
from zipvlm.models.anyres import anyres_geometry, anyres_section, anyres_token_count, load_anyres_graph
from zipvlm.models.llava import open_llava_folder
from zipvlm.models.visionzip import VisionZipConfig


@dataclass(frozen=True)
class AnyresExport(LlavaExport):
    """LLaVA-1.5's export (the folder, the trunk and projector scopes, the language side) with the
    camera's views."""

    geometry: AnyresGeometry = field(kw_only=True)  # the views of a camera-sized frame

    @classmethod
    def open(cls, path: Path, image_size: tuple[int, int] | None) -> AnyresExport:
        folder = open_llava_folder(path)
        return cls(folder, geometry=anyres_geometry(folder, image_size))

    @property
    def views(self) -> int:
        return self.geometry.num_views

    def load_note(self, zip_config: VisionZipConfig | None) -> str:
        tower, folder, camera = self.folder.tower, self.folder, self.geometry
        rows, cols = camera.grid
        keeps = (
            f"keep D={zip_config.dominant} + C={zip_config.contextual} per view"
            if zip_config
            else f"no VisionZip ('{folder.select_strategy}' selection), transformers' layout: "
            f"{camera.packed_grid[0]}x{camera.packed_grid[1]} crop tokens + {camera.packed_grid[0]} newlines"
        )
        return (
            f"{tower.family} tower, {tower.num_tokens} tokens, layer {tower.layer_index + 1} of "
            f"{tower.num_layers} per view; {camera.width}x{camera.height} camera: {rows}x{cols} crops + "
            f"the whole frame = {camera.num_views} views; {keeps}: "
            f"{anyres_token_count(folder, camera, zip_config)} tokens -> {folder.llm_hidden_size}-wide LLM"
        )

    def vision_graph(self, zip_config: VisionZipConfig | None) -> nn.Module:
        return load_anyres_graph(self.folder, self.geometry, zip_config)

    def describe(
        self, directory: Path, zip_config: VisionZipConfig | None, eos_ids: list[int], graphs: GraphEntries
    ) -> Bundle:
        count = anyres_token_count(self.folder, self.geometry, zip_config)
        section = anyres_section(self.folder, self.geometry, zip_config)
        return describe_bundle(directory, self.folder, zip_config, count, eos_ids, graphs, section)
