"""Which tower token each of an image's K visual rows stands for.

The vision graph outputs the D kept token indices (`keep_indices`, ascending);
the C contextual rows follow them, one per target, and the targets are a fixed
function of the kept set (docs/design.md, the algorithm, step 2). The graph and
the runtime share this rule: the graph picks its targets by it, and the runtime
rebuilds them to place every row at its token's position (Qwen2.5-VL's 3D
positions).
"""

from __future__ import annotations

import numpy as np


def contextual_targets(num_rest: int, num_contextual: int) -> list[int]:
    """Positions among the n = N - D remaining tokens (ascending) that become contextual targets."""
    step = max(1, num_rest // num_contextual)
    return list(range(0, num_rest, step))[:num_contextual]


def image_token_order(keep: np.ndarray, num_tokens: int, contextual: int) -> np.ndarray:
    """Token index of each of an image's rows: the kept tokens, then the C contextual targets.

    `keep` is one image's `keep_indices` row (D, ascending); with C = 0 (every token
    kept, `--no-zip`) it is the whole order.
    """
    keep = np.asarray(keep, np.int64).reshape(-1)
    if contextual == 0:
        return keep
    rest = np.setdiff1d(np.arange(num_tokens, dtype=np.int64), keep)  # ascending
    return np.concatenate([keep, rest[contextual_targets(len(rest), contextual)]])
