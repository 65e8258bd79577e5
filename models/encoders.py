"""Vision towers run up to the feature layer, with layer L probed for VisionZip.

`EncoderTrunk` runs a Hugging Face CLIP or SigLIP vision tower's layers 0..L-1 on
their own (fast) attention path, then runs layer L by hand so that it can also
return what VisionZip needs from that layer and nothing more:

- CLIP (CLS at index 0): the CLS row of the attention probabilities, head-summed.
- SigLIP (no CLS): column sums of the head-summed attention probabilities.
- Both: layer L's keys (k_proj output), averaged over heads.

Nothing after layer L runs and no other layer's attention is materialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zipvlm.bundle.errors import ModelFolderError

# Hugging Face vision `model_type` -> our family name.
TOWER_FAMILIES = {"clip_vision_model": "clip", "siglip_vision_model": "siglip"}


@dataclass(frozen=True)
class TowerSpec:
    """Shape facts of a vision tower that export and the manifest need."""

    family: str  # "clip" or "siglip"
    image_size: int  # S: input is [B, 3, S, S]
    patch_size: int
    hidden_size: int  # width of the tower
    num_heads: int
    num_layers: int  # layers in the checkpoint's config
    feature_layer: int  # index into HF hidden_states (LLaVA's vision_feature_layer)
    layer_index: int  # 0-based index of layer L, the last one that runs

    @property
    def has_cls(self) -> bool:
        return self.family == "clip"

    @property
    def num_tokens(self) -> int:
        """N: patches plus CLS where the tower has one."""
        return (self.image_size // self.patch_size) ** 2 + int(self.has_cls)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def resolve_layer_index(feature_layer: int, num_layers: int) -> int:
    """Map LLaVA's hidden_states index (negative allowed) to the 0-based layer L.

    hidden_states[0] is the embedding output and hidden_states[i] the output of
    layer i-1, so hidden_states[-2] of a 24-layer tower is the output of layer 22.
    """
    hidden_index = feature_layer + num_layers + 1 if feature_layer < 0 else feature_layer
    if not 1 <= hidden_index <= num_layers:
        raise ModelFolderError(
            f"vision_feature_layer {feature_layer} does not name a layer output of a "
            f"{num_layers}-layer tower (use 1..{num_layers} or -1..-{num_layers})"
        )
    return hidden_index - 1


def tower_spec(vision_config, feature_layer: int) -> TowerSpec:
    """Read a `TowerSpec` from a transformers vision config."""
    family = TOWER_FAMILIES.get(vision_config.model_type)
    if family is None:
        raise ModelFolderError(
            f"vision tower '{vision_config.model_type}' is not supported "
            f"(supported: {', '.join(sorted(TOWER_FAMILIES))})"
        )
    layers = vision_config.num_hidden_layers
    return TowerSpec(
        family=family,
        image_size=vision_config.image_size,
        patch_size=vision_config.patch_size,
        hidden_size=vision_config.hidden_size,
        num_heads=vision_config.num_attention_heads,
        num_layers=layers,
        feature_layer=feature_layer,
        layer_index=resolve_layer_index(feature_layer, layers),
    )


@dataclass
class LayerProbe:
    """What layer L yields: its output and VisionZip's two signals."""

    hidden: torch.Tensor  # (B, N, width): layer L output = LLaVA's selected feature
    scores: torch.Tensor  # (B, N): CLS attention row (CLIP) or column sums (SigLIP)
    keys: torch.Tensor  # (B, N, head_dim): k_proj output averaged over heads


class EncoderTrunk(nn.Module):
    """A vision tower cut at layer L; forward gives a `LayerProbe`."""

    def __init__(self, tower: nn.Module, spec: TowerSpec):
        super().__init__()
        self.spec = spec
        self.embeddings = tower.embeddings
        # CLIP normalises the embeddings before the encoder; SigLIP does not.
        self.pre_norm = getattr(tower, "pre_layrnorm", None) or nn.Identity()
        self.layers = nn.ModuleList(tower.encoder.layers[: spec.layer_index])
        self.probe_layer = tower.encoder.layers[spec.layer_index]

    def forward(self, pixel_values: torch.Tensor) -> LayerProbe:
        hidden = self.pre_norm(self.embeddings(pixel_values))  # (B, N, width)
        for layer in self.layers:
            hidden = layer(hidden, None)
        return self._probe(hidden)

    def _probe(self, hidden: torch.Tensor) -> LayerProbe:
        """Layer L by hand: same arithmetic as HF's layer, plus scores and keys."""
        layer = self.probe_layer
        attn = layer.self_attn
        batch, tokens, width = hidden.shape
        heads, head_dim = self.spec.num_heads, self.spec.head_dim

        normed = layer.layer_norm1(hidden)

        def split_heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, tokens, heads, head_dim).transpose(1, 2)  # (B, h, N, hd)

        query = split_heads(attn.q_proj(normed))
        key = split_heads(attn.k_proj(normed))
        value = split_heads(attn.v_proj(normed))

        if self.spec.has_cls:
            # Only the CLS row is scored; the layer output keeps the fused kernel.
            context = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
            cls_logits = torch.matmul(query[:, :, :1], key.transpose(2, 3)) * attn.scale
            cls_probs = F.softmax(cls_logits, dim=-1, dtype=torch.float32)  # (B, h, 1, N)
            scores = cls_probs.sum(dim=1)[:, 0]  # (B, N)
        else:
            # Column sums need every row, so the full map is computed once and reused.
            logits = torch.matmul(query, key.transpose(2, 3)) * attn.scale
            probs = F.softmax(logits, dim=-1, dtype=torch.float32)  # (B, h, N, N)
            context = torch.matmul(probs, value)
            scores = probs.sum(dim=1).sum(dim=1)  # (B, N): attention each token receives

        context = context.transpose(1, 2).reshape(batch, tokens, width)
        hidden = hidden + attn.out_proj(context)
        hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
        return LayerProbe(hidden=hidden, scores=scores, keys=key.mean(dim=1))
