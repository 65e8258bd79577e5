"""VisionZip token selection (arXiv 2412.04467), written to export as static ONNX.

Read it against the algorithm in docs/design.md:

1. Dominant: the D tokens with the highest attention score (CLIP: the CLS token is
   always kept, plus the top D-1 patches), ties to the lower index, kept in
   ascending token order.
2. Contextual: the other n = N - D tokens in order; targets at positions
   0, step, 2*step, ... (first C, step = max(1, n // C)); every non-target joins its
   most cosine-similar target (first on ties); contextual token j is
   hidden[target j] + mean(hidden of its members).
3. Output: dominant then contextual, (B, D + C, width).

Every shape here depends only on (N, D, C), never on data: sorting is a full-length
stable sort (ONNX TopK, lower index first on ties), membership is a one-hot matrix,
and the merge is a matmul. No NonZero, boolean indexing or loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zipvlm.bundle.errors import ArgumentError
from zipvlm.bundle.token_order import contextual_targets


@dataclass(frozen=True)
class VisionZipConfig:
    """How many tokens to keep."""

    dominant: int  # D: kept by attention; counts the CLS token on CLIP towers
    contextual: int  # C: merged from the remaining tokens

    @property
    def num_output_tokens(self) -> int:
        """K = D + C: visual tokens the language model sees per image."""
        return self.dominant + self.contextual

    def validate(self, num_tokens: int, has_cls: bool) -> None:
        """Raise `ArgumentError` unless (D, C) fits a tower of `num_tokens` tokens."""
        min_dominant = 2 if has_cls else 1
        if self.dominant < min_dominant:
            why = " (the CLS token counts as one)" if has_cls else ""
            raise ArgumentError(f"--dominant must be at least {min_dominant}{why}, got {self.dominant}")
        if self.contextual < 1:
            raise ArgumentError(f"--contextual must be at least 1, got {self.contextual}")
        if self.num_output_tokens >= num_tokens:
            raise ArgumentError(
                f"--dominant + --contextual must be below the tower's {num_tokens} tokens, "
                f"got {self.dominant} + {self.contextual} = {self.num_output_tokens}"
            )


class VisionZip(nn.Module):
    """Select D dominant and C contextual tokens from one layer's output."""

    def __init__(self, config: VisionZipConfig, num_tokens: int, has_cls: bool):
        super().__init__()
        config.validate(num_tokens, has_cls)
        self.config = config
        self.num_tokens = num_tokens
        self.has_cls = has_cls
        rest = num_tokens - config.dominant
        targets = contextual_targets(rest, config.contextual)
        members = sorted(set(range(rest)) - set(targets))
        # Constants: which of the n remaining tokens are targets and which are members.
        self.register_buffer("target_pos", torch.tensor(targets), persistent=False)
        self.register_buffer("member_pos", torch.tensor(members), persistent=False)
        self.register_buffer("token_pos", torch.arange(num_tokens), persistent=False)
        self.register_buffer("target_ids", torch.arange(len(targets)), persistent=False)

    def forward(
        self, hidden: torch.Tensor, scores: torch.Tensor, keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (B, N, W), scores (B, N), keys (B, N, hd) -> tokens (B, D+C, W), keep (B, D)."""
        dominant = self.config.dominant
        order = self._split_order(scores)  # (B, N): kept ascending, then the rest ascending
        keep, rest = order[:, :dominant], order[:, dominant:]

        dominant_tokens = _take(hidden, keep)  # (B, D, W)
        rest_hidden = _take(hidden, rest)  # (B, n, W)
        rest_keys = F.normalize(_take(keys, rest), dim=-1)  # (B, n, hd), unit length

        target_hidden = rest_hidden[:, self.target_pos]  # (B, C, W)
        member_hidden = rest_hidden[:, self.member_pos]  # (B, n-C, W)
        similarity = torch.matmul(
            rest_keys[:, self.member_pos], rest_keys[:, self.target_pos].transpose(1, 2)
        )  # (B, n-C, C): cosine of each member to each target
        assignment = similarity.argmax(dim=-1)  # (B, n-C), first target on ties
        one_hot = (assignment.unsqueeze(-1) == self.target_ids).to(hidden.dtype)  # (B, n-C, C)
        member_sum = torch.matmul(one_hot.transpose(1, 2), member_hidden)  # (B, C, W)
        member_count = one_hot.sum(dim=1).clamp(min=1).unsqueeze(-1)  # (B, C, 1)
        contextual_tokens = target_hidden + member_sum / member_count

        return torch.cat([dominant_tokens, contextual_tokens], dim=1), keep

    def _split_order(self, scores: torch.Tensor) -> torch.Tensor:
        """Token order: the D highest-scoring tokens ascending, then the others ascending."""
        if self.has_cls:
            # The CLS token is always kept; it ranks only patches 1..N-1.
            cls_first = torch.full_like(scores[:, :1], float("inf"))
            scores = torch.cat([cls_first, scores[:, 1:]], dim=1)
        top = ranked_indices(scores, self.config.dominant, largest=True)  # (B, D)
        kept = torch.zeros_like(scores).scatter(1, top, 1.0)
        # Kept tokens sort by position, the others by position + N: both ascending.
        sort_key = self.token_pos + (1.0 - kept) * self.num_tokens  # (B, N)
        return ranked_indices(sort_key, self.num_tokens, largest=False)


def ranked_indices(values: torch.Tensor, k: int, largest: bool) -> torch.Tensor:
    """Indices of the k largest (or smallest) values along dim 1; equal values in index order.

    That tie rule is ONNX TopK's, so the exported graph uses TopK with a constant K.
    Eager torch.topk breaks ties arbitrarily, so eager PyTorch uses a stable sort.
    """
    if torch.compiler.is_exporting():
        return torch.topk(values, k, dim=1, largest=largest, sorted=True).indices
    return torch.sort(values, dim=1, descending=largest, stable=True).indices[:, :k]


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[b, index[b, i], :] for a (B, N, F) tensor and a (B, M) index."""
    expanded = index.unsqueeze(-1).expand(-1, -1, values.shape[-1])
    return torch.gather(values, 1, expanded)


class AllTokens(nn.Module):
    """The model's own selection (`--no-zip`): every token, minus CLS where the model drops it.

    Same interface as VisionZip, so a full-token bundle runs the very same code.
    """

    def __init__(self, num_tokens: int, drop_cls: bool):
        super().__init__()
        self.start = int(drop_cls)
        self.register_buffer("kept", torch.arange(self.start, num_tokens), persistent=False)

    def forward(
        self, hidden: torch.Tensor, scores: torch.Tensor, keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return hidden[:, self.start :], self.kept.expand(hidden.shape[0], -1)
