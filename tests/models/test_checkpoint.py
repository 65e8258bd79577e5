"""Weights load from transformers-5 names and from older llava-hf names alike, sharded or not."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import pixels
from safetensors.torch import load_file, save_file

from zipvlm.bundle.errors import ModelFolderError
from zipvlm.models.llava import load_vision_graph, open_llava_folder
from zipvlm.models.visionzip import VisionZipConfig

LEGACY = (
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.language_model.", "language_model.model."),
)


def legacy_sharded_copy(source, target):
    """The same weights under pre-transformers-5 names, split over two shards."""
    shutil.copytree(source, target)
    tensors = load_file(source / "model.safetensors")
    renamed = {}
    for key, value in tensors.items():
        for new, old in LEGACY:
            if key.startswith(new):
                key = old + key[len(new) :]
        renamed[key] = value.contiguous()
    (target / "model.safetensors").unlink()
    names = sorted(renamed)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: renamed[k] for k in keys}, target / file)
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (target / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def run(folder):
    graph = load_vision_graph(open_llava_folder(folder), VisionZipConfig(54, 10))
    with torch.no_grad():
        return graph(pixels(1, seed=2))


def test_legacy_sharded_checkpoint_gives_the_same_graph(tiny_folders, tmp_path):
    legacy = tmp_path / "legacy"
    legacy_sharded_copy(tiny_folders["clip-llama"], legacy)
    embeds, keep = run(legacy)
    want_embeds, want_keep = run(tiny_folders["clip-llama"])
    assert torch.equal(keep, want_keep) and torch.equal(embeds, want_embeds)


def test_checkpoint_missing_tower_weights_is_a_clear_error(tiny_folders, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folders["clip-llama"], broken)
    tensors = load_file(broken / "model.safetensors")
    save_file(
        {k: v for k, v in tensors.items() if "encoder.layers.1." not in k}, broken / "model.safetensors"
    )
    with pytest.raises(ModelFolderError, match="lacks .* vision tower weights"):
        run(broken)


def test_bin_only_checkpoint_asks_for_safetensors(tiny_folders, tmp_path):
    folder = tmp_path / "bin"
    shutil.copytree(tiny_folders["clip-llama"], folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelFolderError, match="save it with safetensors"):
        run(folder)
