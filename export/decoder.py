"""The language side of the bundle: decoder.onnx (KV cache), embed.onnx and genai_config.json.

The decoder is built by onnxruntime-genai's model builder from the LLaVA folder's
language model, without its embedding layer (`exclude_embeds`): it takes
`inputs_embeds`, `attention_mask` and past key/values and gives logits and
present key/values. `embed.onnx` is ours: `input_ids` + `visual_embeds` ->
`inputs_embeds`, text rows from the embedding table, image-token rows taken in
order from `visual_embeds`. genai_config.json chains the two as a
"decoder-pipeline", so onnxruntime-genai prefills and decodes with its own KV
cache and sampling; both graphs are plain ONNX that onnxruntime alone runs too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from zipvlm.bundle.errors import ExportError
from zipvlm.bundle.format import DECODER_GRAPH, EMBED_GRAPH, GENAI_CONFIG, MROPE_INPUT, POSITIONS_GRAPH
from zipvlm.export.vision import OPSET, quiet_exporter
from zipvlm.models.language import write_language_model_folder
from zipvlm.models.llava import LlavaFolder
from zipvlm.runtime.logs import quiet_root_logger

# --quant -> the builder's precision; int8 is onnxruntime's dynamic quantization of the fp32 graph.
QUANT_PRECISION = {"none": "fp32", "int4": "int4", "int8": "fp32"}


class EmbedWithImages(nn.Module):
    """input_ids (B, S) + visual_embeds (B', K, H) -> inputs_embeds (B, S, H).

    Every image-token position takes the next visual row, in order, as
    LlavaForConditionalGeneration's masked_scatter does. Decode steps hold no image
    token, so the visual rows bound for the whole conversation are simply unused.
    """

    def __init__(self, table: nn.Embedding, image_token_id: int):
        super().__init__()
        self.table = table
        self.image_token_id = image_token_id

    def forward(self, input_ids: torch.Tensor, visual_embeds: torch.Tensor) -> torch.Tensor:
        is_image = input_ids == self.image_token_id  # (B, S)
        text = self.table(torch.where(is_image, torch.zeros_like(input_ids), input_ids))
        row = torch.cumsum(is_image.reshape(-1).to(torch.int64), dim=0) - 1  # (B*S,)
        visual = visual_embeds.reshape(-1, visual_embeds.shape[-1])[row.clamp(min=0)]
        return torch.where(is_image.unsqueeze(-1), visual.reshape(text.shape), text)


def export_embed(table: nn.Embedding, image_token_id: int, path: Path) -> Path:
    """Trace EmbedWithImages with dynamic batch, sequence and visual-row counts."""
    module = EmbedWithImages(table, image_token_id).eval()
    ids = torch.tensor([[1, image_token_id, image_token_id, 2]] * 2)
    visual = torch.zeros(2, 2, table.embedding_dim)
    dims = {
        "input_ids": {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")},
        "visual_embeds": {0: torch.export.Dim("images"), 1: torch.export.Dim("rows")},
    }
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module,
            (ids, visual),
            dynamo=True,
            opset_version=OPSET,
            input_names=["input_ids", "visual_embeds"],
            output_names=["inputs_embeds"],
            dynamic_shapes=dims,
            verbose=False,
        )
    program.save(str(path))
    return path


def build_decoder(lm_folder: Path, out: Path, quant: str, options: tuple[str, ...] = ()) -> dict:
    """Run onnxruntime-genai's builder in a subprocess (its memory is freed when it exits).

    int8 quantizes the builder's float32 graph with onnxruntime's dynamic quantizer.
    `options` are more of the builder's `--extra_options` (key=value).

    Moves the graph into `out` as decoder.onnx (+ decoder.onnx.data) and returns the
    builder's genai config.
    """
    if quant not in QUANT_PRECISION:
        raise ExportError(f"--quant {quant} is not supported (choose from {', '.join(QUANT_PRECISION)})")
    with tempfile.TemporaryDirectory(prefix="zipvlm-builder-") as work:
        command = [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(lm_folder),
            "-o",
            work,
            "-p",
            QUANT_PRECISION[quant],
            "-e",
            "cpu",
            "-c",
            str(Path(work) / "cache"),
            "--extra_options",
            "exclude_embeds=true",
            *options,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ExportError(f"onnxruntime-genai's builder failed: {last[0]}")
        built = Path(work)
        graph = built / "model.onnx"
        if quant == "int8":
            graph = _quantize_int8(graph, built / "model.int8.onnx")
        _move_graph(graph, out / DECODER_GRAPH)
        return json.loads((built / "genai_config.json").read_text())


def _quantize_int8(source: Path, target: Path) -> Path:
    """Weight-only int8 (per channel) of the MatMuls, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Its advice to run shape pre-processing is for static (calibrated) quantization.
    with quiet_root_logger():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            use_external_data_format=True,
        )
    return target


def _move_graph(source: Path, target: Path) -> None:
    """Move an ONNX file and its external data, renaming the data file after the graph.

    Only the graph proto is rewritten (the weights stay on disk), so this costs the
    same for a 7B decoder as for a tiny one.
    """
    model = onnx.load(str(source), load_external_data=False)
    data_name = target.name + ".data"
    moved: set[str] = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                if entry.value not in moved:
                    (source.parent / entry.value).rename(target.parent / data_name)
                    moved.add(entry.value)
                entry.value = data_name
    if len(moved) > 1:
        raise ExportError(f"the builder wrote {len(moved)} external data files; expected one")
    onnx.save_model(model, str(target))


def pipeline_config(config: dict, eos_token_ids: list[int], threads: int, positions: bool = False) -> dict:
    """Turn the builder's decoder config into "decoder-pipeline" stages: embed -> decoder, or with
    `positions` (3D rotary positions, Qwen2.5-VL) embed -> positions -> decoder."""
    model = config["model"]
    decoder = model["decoder"]
    layers = decoder["num_hidden_layers"]
    past = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    decoder["inputs"]["input_ids"] = "input_ids"
    decoder["filename"] = DECODER_GRAPH
    decoder["session_options"]["intra_op_num_threads"] = threads
    stages: dict[str, dict] = {
        "embed": {
            "filename": EMBED_GRAPH,
            "inputs": ["input_ids", "visual_embeds"],
            "outputs": ["inputs_embeds"],
        }
    }
    position_inputs = []
    if positions:
        stages["positions"] = {
            "filename": POSITIONS_GRAPH,
            "inputs": ["position_ids", "prompt_positions", "rope_delta"],
            "outputs": [MROPE_INPUT],
        }
        position_inputs = [MROPE_INPUT]
    stages["decoder"] = {
        "filename": DECODER_GRAPH,
        "inputs": ["inputs_embeds", "attention_mask", *position_inputs, *past],
        "outputs": ["logits", *present],
    }
    decoder["pipeline"] = [stages]
    model["type"] = "decoder-pipeline"
    # The builder may add ids (e.g. 0) of its own; the folder's own list is the truth.
    model["eos_token_id"] = eos_token_ids if len(eos_token_ids) != 1 else eos_token_ids[0]
    return config


def language_graphs(quant: str, positions: bool = False) -> dict[str, dict[str, Any]]:
    """The manifest's entries for decoder.onnx and embed.onnx (and positions.onnx)."""
    position_input = f"{MROPE_INPUT}, " if positions else ""
    graphs: dict[str, dict[str, Any]] = {
        DECODER_GRAPH: {
            "dtype": "float32",
            "quantization": quant,
            "inputs": f"inputs_embeds, attention_mask, {position_input}past_key_values.*",
        },
        EMBED_GRAPH: {"dtype": "float32", "quantization": "none", "inputs": "input_ids, visual_embeds"},
    }
    if positions:
        graphs[POSITIONS_GRAPH] = {
            "dtype": "int64",
            "quantization": "none",
            "inputs": "position_ids, prompt_positions, rope_delta",
        }
    return graphs


def export_language(
    folder: LlavaFolder, out: Path, quant: str, eos_token_ids: list[int], threads: int = 2
) -> None:
    """Write decoder.onnx (+ .data), embed.onnx and genai_config.json into `out`."""
    with tempfile.TemporaryDirectory(prefix="zipvlm-lm-") as work:
        lm = write_language_model_folder(folder, Path(work))
        config = build_decoder(lm.path, out, quant, lm.builder_options)
        export_embed(lm.embed_tokens, folder.config.image_token_id, out / EMBED_GRAPH)
    config = pipeline_config(config, eos_token_ids, threads)
    (out / GENAI_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
