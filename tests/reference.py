"""A slow, obvious VisionZip, written from docs/design.md alone, to check the module and graphs.

It takes what Hugging Face's eager forward gives (all hidden states, all attention
maps) and follows the steps of docs/design.md with Python loops and sorted(), one image at a
time. Nothing here is shared with zipvlm.models.visionzip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ReferenceOutput:
    image_embeds: torch.Tensor  # (B, D + C, H_llm): projector of dominant + contextual
    keep_indices: list[list[int]]  # per image, ascending
    assignment: list[dict[int, list[int]]]  # per image: target position -> member positions


def reference_visionzip(model, pixel_values: torch.Tensor, dominant: int, contextual: int) -> ReferenceOutput:
    """`model` is an eager-attention LlavaForConditionalGeneration."""
    config = model.config
    tower = model.model.vision_tower
    with torch.no_grad():
        out = tower(pixel_values, output_hidden_states=True, output_attentions=True)
    num_layers = len(tower.encoder.layers)
    hidden_index = config.vision_feature_layer % (num_layers + 1)
    layer_index = hidden_index - 1  # hidden_states[i] is the output of layer i-1
    hidden = out.hidden_states[hidden_index]  # (B, N, W)
    attention = out.attentions[layer_index]  # (B, heads, N, N)
    layer = tower.encoder.layers[layer_index]
    with torch.no_grad():
        raw_keys = layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[layer_index]))
    batch, tokens, _ = raw_keys.shape
    heads = attention.shape[1]
    keys = raw_keys.view(batch, tokens, heads, -1).mean(dim=2)  # (B, N, head_dim)
    has_cls = config.vision_config.model_type == "clip_vision_model"

    rows, keeps, assignments = [], [], []
    for b in range(batch):
        keep = _dominant(attention[b], dominant, has_cls)
        rest = [i for i in range(tokens) if i not in keep]
        groups = _assign(keys[b], rest, contextual)
        tokens_b = [hidden[b, i] for i in keep]
        for target, members in groups.items():
            token = hidden[b, rest[target]].clone()
            if members:
                token = token + sum(hidden[b, rest[m]] for m in members) / len(members)
            tokens_b.append(token)
        rows.append(torch.stack(tokens_b))
        keeps.append(keep)
        assignments.append(groups)
    with torch.no_grad():
        embeds = model.model.multi_modal_projector(torch.stack(rows))
    return ReferenceOutput(embeds, keeps, assignments)


def _dominant(attention: torch.Tensor, dominant: int, has_cls: bool) -> list[int]:
    """Step 1: top tokens by attention score, ties to the lower index, ascending."""
    summed = attention.sum(dim=0)  # (N, N): summed over heads
    tokens = summed.shape[0]
    if has_cls:
        score = summed[0].tolist()  # CLS row
        patches = sorted(range(1, tokens), key=lambda i: (-score[i], i))[: dominant - 1]
        return sorted([0] + patches)
    score = summed.sum(dim=0).tolist()  # column sums: attention each token receives
    return sorted(sorted(range(tokens), key=lambda i: (-score[i], i))[:dominant])


def _assign(keys: torch.Tensor, rest: list[int], contextual: int) -> dict[int, list[int]]:
    """Step 2: targets every `step` positions; each other token to its most similar target."""
    n = len(rest)
    step = max(1, n // contextual)
    targets = list(range(0, n, step))[:contextual]
    metric = [keys[i] / keys[i].norm() for i in rest]
    groups: dict[int, list[int]] = {t: [] for t in targets}
    for position in range(n):
        if position in groups:
            continue
        similarity = [float(torch.dot(metric[position], metric[t])) for t in targets]
        best = similarity.index(max(similarity))  # first on ties
        groups[targets[best]].append(position)
    return groups
