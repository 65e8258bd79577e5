"""A slow, obvious VisionZip for Qwen2.5-VL, written from docs/design.md alone, and the language
model fed by it with the positions transformers gives the unpruned prompt.

It runs transformers' own vision tower (eager attention) on the processor's
flattened patches and reads the last full-attention block through hooks: its
qkv projection and its rotary cos/sin. The probabilities come from transformers'
own rotary and eager attention; which merged token a patch belongs to comes from
transformers' window index. Everything after that is Python loops over patches and
tokens in float64, one image at a time. Positions come from transformers'
`get_rope_index` on the unpruned prompt, columns picked by merged index. Nothing
here is shared with zipvlm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Random towers put some scores close together: float32 scores differ from this float64 reference
# by ~1e-8, so ranks closer than this could swap; tests assert the D-th score clears the next by more.
NEAR_TIE = 2e-7


@dataclass
class QwenReference:
    tokens: np.ndarray  # (D + C, H_llm): dominant rows ascending, then contextual in target order
    keep: list[int]  # D merged raster indices, ascending
    targets: list[int]  # C merged raster indices of the contextual targets, in target order
    margin: float  # score of the D-th kept token minus the best dropped one


def patchify(pixels: np.ndarray, patch: int = 14, merge: int = 2, temporal: int = 2) -> np.ndarray:
    """(3, H, W) normalised -> the processor's flattened patches (N, 3 * temporal * patch**2)."""
    channels, height, width = pixels.shape
    gh, gw = height // patch, width // patch
    x = pixels.reshape(channels, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.transpose(1, 4, 2, 5, 0, 3, 6)[:, :, :, :, :, None]
    x = np.broadcast_to(x, (*x.shape[:5], temporal, patch, patch))
    return np.ascontiguousarray(x.reshape(gh * gw, channels * temporal * patch * patch))


def probe_tower(model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image (3, H, W) through transformers' tower -> (scores (M,), keys (M, hd), hidden (M, H_llm)),
    merged tokens in raster order of the merged grid."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        apply_rotary_pos_emb_vision,
        eager_attention_forward,
    )
    from transformers.vision_utils import get_vision_window_index

    visual = model.model.visual
    config = visual.config
    block = visual.blocks[max(config.fullatt_block_indexes)]
    grabbed: dict[str, torch.Tensor] = {}

    def grab_rotary(module, args, kwargs):
        grabbed["cos"], grabbed["sin"] = kwargs["position_embeddings"]

    def grab_qkv(module, args, output):
        grabbed["qkv"] = output.detach()

    hooks = [
        block.attn.register_forward_pre_hook(grab_rotary, with_kwargs=True),
        block.attn.qkv.register_forward_hook(grab_qkv),
    ]
    patch = config.patch_size
    thw = torch.tensor([[1, pixels.shape[1] // patch, pixels.shape[2] // patch]])
    try:
        with torch.no_grad():
            hidden = visual(torch.from_numpy(patchify(pixels)), grid_thw=thw).pooler_output
    finally:
        for hook in hooks:
            hook.remove()

    sequence, heads = grabbed["qkv"].shape[0], config.num_heads
    q, k, v = grabbed["qkv"].reshape(sequence, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
    rq, rk = apply_rotary_pos_emb_vision(q, k, grabbed["cos"], grabbed["sin"])
    _, probs = eager_attention_forward(
        block.attn,
        rq.transpose(0, 1)[None],
        rk.transpose(0, 1)[None],
        v.transpose(0, 1)[None],
        None,
        scaling=block.attn.scaling,
    )
    probs = probs[0].numpy().astype(np.float64)  # (heads, N, N): one image, one attention segment
    keys = k.numpy().astype(np.float64)  # (N, heads, hd), before rotary

    window_index, _ = get_vision_window_index(
        thw, spatial_merge_size=config.spatial_merge_size, window_size=config.window_size, patch_size=patch
    )
    unit = config.spatial_merge_size**2
    merged = sequence // unit
    received = probs.sum(axis=0).mean(axis=0)  # (N,): per sequence position
    scores, key_sums = np.zeros(merged), np.zeros((merged, keys.shape[-1]))
    for position in range(sequence):
        token = int(window_index[position // unit])  # the merged raster index of this patch
        scores[token] += received[position]
        key_sums[token] += keys[position].mean(axis=0)
    return scores, key_sums / unit, hidden.numpy().astype(np.float64)


def reference_selection(
    scores: np.ndarray, keys: np.ndarray, hidden: np.ndarray, dominant: int, contextual: int
) -> QwenReference:
    """docs/design.md's selection with loops; on equal scores the lower index ranks first."""
    ranking = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = sorted(ranking[:dominant])
    margin = float(scores[ranking[dominant - 1]] - scores[ranking[dominant]])
    rest = [i for i in range(len(scores)) if i not in set(keep)]
    step = max(1, len(rest) // contextual)
    target_slots = list(range(0, len(rest), step))[:contextual]
    targets = [rest[slot] for slot in target_slots]
    members: dict[int, list[int]] = {target: [] for target in targets}
    unit = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    for slot, token in enumerate(rest):
        if slot in target_slots:
            continue
        best, best_similarity = targets[0], -np.inf
        for target in targets:
            similarity = float(unit[token] @ unit[target])
            if similarity > best_similarity:  # strictly greater: the first target wins ties
                best, best_similarity = target, similarity
        members[best].append(token)
    rows = [hidden[i] for i in keep]
    for target in targets:
        group = members[target]
        rows.append(hidden[target] + (np.mean([hidden[i] for i in group], axis=0) if group else 0.0))
    return QwenReference(np.stack(rows), keep, targets, margin)


def unpruned_positions(model, ids: list[int], grids: list[tuple[int, int, int]]) -> tuple[np.ndarray, int]:
    """transformers' (3, S) positions of a prompt holding every merged token, and the first
    generated token's position (S + rope_delta)."""
    input_ids = torch.tensor([ids])
    image_types = (input_ids == model.config.image_token_id).int()
    with torch.no_grad():
        positions, delta = model.model.get_rope_index(input_ids, image_types, torch.tensor(grids))
    return positions[:, 0].numpy(), len(ids) + int(delta[0, 0])


def pruned_columns(
    ids: list[int], image_token_id: int, rows_per_image: list[list[int]], merged: int
) -> list[int]:
    """Which column of the unpruned prompt (every image `merged` tokens long) each token of the
    pruned prompt `ids` stands for: text in order, image j's rows at its first column + merged index."""
    columns, image, i, column = [], 0, 0, 0
    while i < len(ids):
        if ids[i] != image_token_id:
            columns.append(column)
            i, column = i + 1, column + 1
            continue
        rows = rows_per_image[image]
        columns.extend(column + token for token in rows)
        i, column, image = i + len(rows), column + merged, image + 1
    return columns


def lm_greedy(
    model, inputs_embeds: np.ndarray, positions: np.ndarray, next_position: int, steps: int
) -> list[int]:
    """Greedy ids of transformers' Qwen2.5-VL language model fed embeddings (S, H) at explicit
    positions (3, S); the i-th generated token at next_position + i on all three axes."""
    from transformers import DynamicCache

    language_model = model.model.language_model
    cache = DynamicCache(config=language_model.config)
    embeds = torch.from_numpy(np.asarray(inputs_embeds, np.float32))[None]
    pos = torch.from_numpy(positions)[:, None, :]
    length, ids = 0, []
    with torch.no_grad():
        for step in range(steps):
            length += embeds.shape[1]
            out = language_model(
                inputs_embeds=embeds,
                position_ids=pos,
                past_key_values=cache,
                attention_mask=torch.ones(1, length, dtype=torch.long),
                use_cache=True,
            )
            token = int(model.lm_head(out.last_hidden_state[:, -1])[0].argmax())
            ids.append(token)
            embeds = language_model.embed_tokens(torch.tensor([[token]]))
            pos = torch.full((3, 1, 1), next_position + step, dtype=torch.long)
    return ids


def prompt_embeds(model, ids: list[int], image_rows: np.ndarray) -> np.ndarray:
    """(S, H): the embedding table's rows for text, `image_rows` in order at the image tokens."""
    with torch.no_grad():
        embeds = model.model.language_model.embed_tokens(torch.tensor(ids)).numpy().copy()
    slots = [i for i, token in enumerate(ids) if token == model.config.image_token_id]
    embeds[slots] = image_rows
    return embeds
