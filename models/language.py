"""The LLaVA folder's language model as a standalone Hugging Face causal-LM folder.

onnxruntime-genai's builder takes a Llama/Qwen2 folder, not a LLaVA one. The
tensors are streamed from the LLaVA checkpoint under their causal-LM names into
new safetensors shards (dtype kept), so no model is ever instantiated here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zipvlm.bundle.errors import ModelFolderError
from zipvlm.models.checkpoint import checkpoint_files
from zipvlm.models.llava import LlavaFolder

CAUSAL_LM = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
# LLaVA checkpoint prefix -> causal-LM prefix (transformers 5 names, then older llava-hf names).
RENAMES = (
    ("model.language_model.", "model."),
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
    ("lm_head.", "lm_head."),
)
SHARD_BYTES = 2 * 1024**3


@dataclass
class LanguageModelFolder:
    path: Path
    embed_tokens: nn.Embedding  # float32 copy of the input embedding table, for embed.onnx
    builder_options: tuple[str, ...] = ()  # extra `key=value` options for onnxruntime-genai's builder


def sliding_window_fix(text_config) -> tuple[str, ...]:
    """Make the genai builder window a Mistral model's attention as transformers does.

    The builder windows only the layers whose `layer_types[i]` is "sliding_attention";
    Mistral configs have no layer_types, so it would silently attend to everything
    (wrong as soon as the context exceeds the window). With layer_types written, its
    default is a ring-buffer KV cache that cannot start from an empty or reused past
    (the stream's prefix cache); windowed_kv_cache=false keeps the growing cache and
    windows the attention itself.
    """
    if text_config.model_type != "mistral" or getattr(text_config, "sliding_window", None) is None:
        return ()
    text_config.layer_types = ["sliding_attention"] * text_config.num_hidden_layers
    return ("windowed_kv_cache=false",)


def write_language_model_folder(folder: LlavaFolder, out: Path) -> LanguageModelFolder:
    """Write config.json, generation_config.json and safetensors shards of the LM to `out`."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    text = folder.config.text_config
    if text.model_type not in CAUSAL_LM:
        raise ModelFolderError(
            f"language model '{text.model_type}' is not supported (supported: {', '.join(CAUSAL_LM)})"
        )
    shard: dict[str, torch.Tensor] = {}
    shard_bytes, shard_count, total_bytes = 0, 0, 0
    weight_map: dict[str, str] = {}
    embed = None

    def flush() -> None:
        nonlocal shard, shard_bytes, shard_count
        if shard:
            name = f"model-{shard_count:05d}.safetensors"
            save_file(shard, str(out / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
            shard, shard_bytes, shard_count = {}, 0, shard_count + 1

    for file in checkpoint_files(folder.path):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                name = _rename(key)
                if name is None:
                    continue
                tensor = handle.get_tensor(key)
                if name == "model.embed_tokens.weight":
                    embed = tensor
                shard[name] = tensor
                shard_bytes += tensor.numel() * tensor.element_size()
                total_bytes += tensor.numel() * tensor.element_size()
                if shard_bytes >= SHARD_BYTES:
                    flush()
    flush()
    index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    if embed is None:
        raise ModelFolderError(f"{folder.path}: the checkpoint has no language-model embedding table")
    text = text.__class__(**text.to_dict())
    text.architectures = [CAUSAL_LM[text.model_type]]
    builder_options = sliding_window_fix(text)
    text.save_pretrained(out)
    # The builder also saves the tokenizer; giving it the fast one avoids a conversion.
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if (folder.path / name).is_file():
            shutil.copy2(folder.path / name, out / name)
    table = nn.Embedding.from_pretrained(embed.to(torch.float32), freeze=True)
    return LanguageModelFolder(out, table, builder_options)


def _rename(key: str) -> str | None:
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return None
