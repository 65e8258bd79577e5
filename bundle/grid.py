"""Fixed patch grids: the size a frame is resized to and the merged tokens it gives.

Qwen2.5-VL's image processor resizes each image to multiples of patch x merge
pixels within an area range (`smart_resize`), so the number of image tokens depends
on the frame's size. zipvlm fixes the camera's size at export: the grid the
processor gives that size is the vision graph's input, recorded in the bundle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_ASPECT_RATIO = 200  # the processor refuses longer images


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The processor's (height, width) for a frame: multiples of `factor`, area within the bounds.

    Rounding is Python's round() (ties to even), as in Qwen2VLImageProcessor.
    Raises ValueError for an aspect ratio above 200.
    """
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"the aspect ratio {max(height, width) / min(height, width):.0f} is above {MAX_ASPECT_RATIO}, "
            "which the model's image processor refuses"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class PatchGrid:
    """A fixed patch grid: the image the vision graph takes and its patches merged m x m."""

    height: int  # pixels of the graph's input
    width: int
    patch_size: int
    merge_size: int  # m: an m x m block of patches is one merged token (one LLM token)

    @property
    def grid_h(self) -> int:
        return self.height // self.patch_size

    @property
    def grid_w(self) -> int:
        return self.width // self.patch_size

    @property
    def merged_h(self) -> int:
        return self.grid_h // self.merge_size

    @property
    def merged_w(self) -> int:
        return self.grid_w // self.merge_size

    @property
    def num_patches(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def num_merged(self) -> int:
        """Merged tokens: the image's tokens in the language model without VisionZip."""
        return self.merged_h * self.merged_w

    @property
    def cell(self) -> int:
        """Side in pixels of the square a merged token covers."""
        return self.patch_size * self.merge_size
