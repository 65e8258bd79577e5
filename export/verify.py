"""Run the exported graph in onnxruntime and compare it with PyTorch on the same input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zipvlm.bundle.errors import VerificationError
from zipvlm.runtime.providers import ort_session

FEATURE_ATOL = 1e-4  # float32 graph vs PyTorch, absolute, on image_embeds


@dataclass(frozen=True)
class VerifyResult:
    max_abs_diff: float  # image_embeds, onnxruntime vs PyTorch
    indices_equal: bool
    batch: int


def sample_pixels(
    batch: int, input_hw: tuple[int, int], seed: int = 0, views: int | None = None
) -> torch.Tensor:
    """Deterministic normalised-looking images of (height, width), different per batch item (and
    per view: `views` any-res views per image give (batch, views, 3, H, W))."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *([views] if views else []), 3, *input_hw, generator=generator)


def run_onnx(path: Path, pixels: np.ndarray, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image_embeds, keep_indices) from onnxruntime's CPU provider."""
    session = ort_session(path, threads=threads)
    embeds, keep = session.run(["image_embeds", "keep_indices"], {"pixel_values": pixels})
    return embeds, keep


def verify_against_torch(
    graph: torch.nn.Module, path: Path, pixels: torch.Tensor, atol: float = FEATURE_ATOL
) -> VerifyResult:
    """Raise VerificationError when kept indices differ or features differ beyond atol."""
    with torch.no_grad():
        want_embeds, want_keep = graph(pixels)
    got_embeds, got_keep = run_onnx(path, pixels.numpy())
    if got_keep.dtype != np.int64:
        raise VerificationError(f"keep_indices is {got_keep.dtype}, expected int64")
    indices_equal = np.array_equal(got_keep, want_keep.numpy())
    diff = float(np.abs(got_embeds - want_embeds.numpy()).max())
    if not indices_equal:
        rows = int((got_keep != want_keep.numpy()).reshape(len(got_keep), -1).any(axis=1).sum())
        raise VerificationError(
            f"onnxruntime kept different tokens than PyTorch in {rows} of {len(got_keep)} images"
        )
    if not diff <= atol:
        raise VerificationError(
            f"image_embeds differ by {diff:.2e} between onnxruntime and PyTorch (atol {atol:.0e})"
        )
    return VerifyResult(max_abs_diff=diff, indices_equal=True, batch=len(got_keep))
