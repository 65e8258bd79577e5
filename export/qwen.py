"""The Qwen2.5-VL family for export: a fixed camera size, VisionZip on merged tokens, 3D positions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from zipvlm.bundle.format import (
    Bundle,
    LanguageSection,
    PreprocessSpec,
    QwenSection,
    SelectionSection,
    VisionSection,
)
from zipvlm.bundle.grid import PatchGrid
from zipvlm.export.decoder import language_graphs
from zipvlm.export.family import GraphEntries
from zipvlm.export.manifest import PIL_RESAMPLE, chat_template, eos_token_ids
from zipvlm.export.mrope import export_mrope_language
from zipvlm.models.qwen25vl import (
    DEFAULT_IMAGE_SIZE,
    MODEL_TYPE,
    QwenFolder,
    load_vision_graph,
    open_qwen_folder,
)
from zipvlm.models.tiny import CLIP_MEAN, CLIP_STD
from zipvlm.models.visionzip import VisionZipConfig


@dataclass(frozen=True)
class QwenExport:
    folder: QwenFolder
    camera: tuple[int, int]  # (width, height) of the frames, --image-size
    grid: PatchGrid  # what the processor resizes such frames to

    @classmethod
    def open(cls, path: Path, image_size: tuple[int, int] | None) -> QwenExport:
        folder = open_qwen_folder(path)
        return cls(folder, image_size or DEFAULT_IMAGE_SIZE, folder.grid(image_size))

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.grid.height, self.grid.width

    @property
    def views(self) -> int | None:
        """One view per image: pixel_values (B, 3, H, W)."""
        return None

    @property
    def half_scopes(self) -> tuple[str, ...]:
        """Every block but the probe block (its scores and keys pick the tokens), and the merger."""
        blocks = range(int(self.folder.vision.depth))
        return (*(f"tower.blocks.{i}." for i in blocks if i != self.folder.probe_block), "tower.merger")

    def num_image_tokens(self, zip_config: VisionZipConfig | None) -> int:
        return zip_config.num_output_tokens if zip_config else self.grid.num_merged

    def load_note(self, zip_config: VisionZipConfig | None) -> str:
        grid, vision = self.grid, self.folder.vision
        keeps = f"keep D={zip_config.dominant} + C={zip_config.contextual}" if zip_config else "no VisionZip"
        return (
            f"Qwen2.5-VL tower, {self.camera[0]}x{self.camera[1]} frames resized to "
            f"{grid.width}x{grid.height}: {grid.num_patches} patches, {grid.merged_w}x{grid.merged_h} = "
            f"{grid.num_merged} merged tokens, scored in block {self.folder.probe_block + 1} of "
            f"{vision.depth}; {keeps}: {self.num_image_tokens(zip_config)} tokens -> "
            f"{self.folder.llm_hidden_size}-wide LLM"
        )

    def vision_graph(self, zip_config: VisionZipConfig | None) -> nn.Module:
        return load_vision_graph(self.folder, self.grid, zip_config)

    def eos_token_ids(self) -> list[int]:
        return eos_token_ids(self.folder.path, self.folder.config.text_config)

    def describe(
        self, directory: Path, zip_config: VisionZipConfig | None, eos_ids: list[int], graphs: GraphEntries
    ) -> Bundle:
        folder, grid, config = self.folder, self.grid, self.folder.config
        vision, pre = folder.vision, folder.preprocessor
        min_pixels, max_pixels = folder.min_max_pixels
        normalize = pre.get("do_normalize", True)
        return Bundle(
            path=directory,
            model_family=MODEL_TYPE,
            source_model=str(folder.path.resolve()),
            vision=VisionSection(
                tower=MODEL_TYPE,
                has_cls=False,
                image_size=0,
                patch_size=grid.patch_size,
                num_tokens=grid.num_merged,
                feature_layer=-1,
                layer_index=int(vision.depth) - 1,
            ),
            selection=SelectionSection(
                enabled=zip_config is not None,
                dominant=zip_config.dominant if zip_config else None,
                contextual=zip_config.contextual if zip_config else None,
                num_image_tokens=self.num_image_tokens(zip_config),
            ),
            preprocess=PreprocessSpec(
                image_size=0,
                convert_rgb=bool(pre.get("do_convert_rgb", True)),
                pad_to_square=False,
                resize={"height": grid.height, "width": grid.width},
                resample=PIL_RESAMPLE.get(pre.get("resample", 3), "bicubic"),
                center_crop=None,
                rescale_factor=pre.get("rescale_factor", 1 / 255) if pre.get("do_rescale", True) else 1.0,
                mean=pre.get("image_mean", CLIP_MEAN) if normalize else [0.0] * 3,
                std=pre.get("image_std", CLIP_STD) if normalize else [1.0] * 3,
            ),
            language=LanguageSection(
                model_type=config.text_config.model_type,
                hidden_size=folder.llm_hidden_size,
                image_token_id=config.image_token_id,
                eos_token_ids=tuple(eos_ids),
                chat_template=chat_template(folder.path),
            ),
            graphs=graphs,
            qwen=QwenSection(
                camera_width=self.camera[0],
                camera_height=self.camera[1],
                image_width=grid.width,
                image_height=grid.height,
                patch_size=grid.patch_size,
                merge_size=grid.merge_size,
                temporal_patch_size=int(vision.temporal_patch_size),
                min_pixels=min_pixels,
                max_pixels=max_pixels,
                window_size=int(vision.window_size),
                probe_block=folder.probe_block,
                mrope_section=folder.mrope_section,
                vision_start_token_id=config.vision_start_token_id,
                vision_end_token_id=config.vision_end_token_id,
            ),
        )

    def export_language(self, out: Path, quant: str, eos_ids: list[int]) -> GraphEntries:
        export_mrope_language(self.folder, out, quant, eos_ids)
        return language_graphs(quant, positions=True)
