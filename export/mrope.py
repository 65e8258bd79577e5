"""The language side of a Qwen2.5-VL bundle: the decoder with 3D positions, and genai's positions stage.

onnxruntime-genai's builder builds the Qwen2.5-VL text model straight from the
folder (`exclude_embeds`), with a `position_ids` input of shape [3, B, S]: the
(t, h, w) rotary positions. genai's own Qwen2.5-VL pipeline computes those
positions for the unpruned image itself, so the bundle drives the decoder through
a "decoder-pipeline" of three stages instead (docs/design.md, "Positions"):

1. embed.onnx: input_ids + visual_embeds -> inputs_embeds (as for LLaVA);
2. positions.onnx: genai's 1D position_ids [B, S] (0, 1, 2, ... over the tokens it
   holds) + `prompt_positions` [3, B, P] and `rope_delta` [B, 1], set once per
   generator -> `mrope_position_ids` [3, B, S]: a prompt token takes its column of
   prompt_positions, any later token its 1D position + rope_delta (= the position
   the unpruned sequence gives it);
3. decoder.onnx, its `position_ids` input renamed `mrope_position_ids` so that genai
   does not bind its own 1D positions to it.

The direct onnxruntime driver (the stream's prefix cache) binds `mrope_position_ids`
itself and does not run positions.onnx.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from torch import nn

from zipvlm.bundle.errors import ModelFolderError
from zipvlm.bundle.format import DECODER_GRAPH, EMBED_GRAPH, GENAI_CONFIG, MROPE_INPUT, POSITIONS_GRAPH
from zipvlm.export.decoder import build_decoder, export_embed, pipeline_config
from zipvlm.export.vision import OPSET, quiet_exporter
from zipvlm.models.checkpoint import read_tensors
from zipvlm.models.qwen25vl import QwenFolder

EMBED_PREFIXES = ("model.language_model.embed_tokens.", "model.embed_tokens.")
BUILDER_POSITION_INPUT = "position_ids"


class MropePositions(nn.Module):
    """genai's 1D positions -> the prompt's 3D positions, then the unpruned continuation."""

    def forward(
        self, position_ids: torch.Tensor, prompt_positions: torch.Tensor, rope_delta: torch.Tensor
    ) -> torch.Tensor:
        """position_ids (B, S), prompt_positions (3, B, P), rope_delta (B, 1) -> (3, B, S)."""
        prompt_length = prompt_positions.shape[2]
        index = position_ids.clamp(max=prompt_length - 1).unsqueeze(0).expand(3, -1, -1)
        prompt = torch.gather(prompt_positions, 2, index)
        later = (position_ids + rope_delta).unsqueeze(0).expand(3, -1, -1)
        return torch.where((position_ids < prompt_length).unsqueeze(0), prompt, later)


def export_positions(path: Path) -> Path:
    """Trace MropePositions with dynamic batch, sequence and prompt lengths."""
    positions = torch.arange(5).expand(2, 5).clone()
    prompt = torch.arange(7).expand(3, 2, 7).clone()
    delta = torch.zeros(2, 1, dtype=torch.int64)
    batch = torch.export.Dim("batch")
    dims = {
        "position_ids": {0: batch, 1: torch.export.Dim("sequence")},
        "prompt_positions": {1: batch, 2: torch.export.Dim("prompt")},
        "rope_delta": {0: batch},
    }
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            MropePositions().eval(),
            (positions, prompt, delta),
            dynamo=True,
            opset_version=OPSET,
            input_names=["position_ids", "prompt_positions", "rope_delta"],
            output_names=[MROPE_INPUT],
            dynamic_shapes=dims,
            verbose=False,
        )
    program.save(str(path))
    return path


def rename_input(path: Path, old: str, new: str) -> None:
    """Rename a graph input in place; only the graph proto is rewritten, not its external weights."""
    model = onnx.load(str(path), load_external_data=False)
    for value in model.graph.input:
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
    onnx.save_model(model, str(path))


def embedding_table(folder: QwenFolder) -> nn.Embedding:
    """The language model's input embedding table in float32, read alone from the checkpoint."""
    weight = read_tensors(folder.path, EMBED_PREFIXES, ()).tower.get("weight")
    if weight is None:
        raise ModelFolderError(f"{folder.path}: the checkpoint has no language-model embedding table")
    return nn.Embedding.from_pretrained(weight.to(torch.float32), freeze=True)


def export_mrope_language(
    folder: QwenFolder, out: Path, quant: str, eos_token_ids: list[int], threads: int = 2
) -> None:
    """Write decoder.onnx (+ .data), embed.onnx, positions.onnx and genai_config.json into `out`."""
    config = build_decoder(folder.path, out, quant)
    rename_input(out / DECODER_GRAPH, BUILDER_POSITION_INPUT, MROPE_INPUT)
    export_embed(embedding_table(folder), folder.config.image_token_id, out / EMBED_GRAPH)
    export_positions(out / POSITIONS_GRAPH)
    config = pipeline_config(config, eos_token_ids, threads, positions=True)
    (out / GENAI_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
