"""Any-resolution views of LLaVA-NeXT / LLaVA-OneVision for one frame size, in plain Python.

Everything the Hugging Face processor and model decide from the image's size alone,
so that export (the static layout), the runtime (cutting a frame into views) and the
live overlay (a kept patch back on the frame) read the same numbers
(docs/design.md, "LLaVA-NeXT / LLaVA-OneVision"):

- the grid: the pinpoint `select_best_resolution` picks (most effective pixels,
  then fewest wasted; the first on a full tie);
- the resize inside that pinpoint (aspect kept, `ceil` on the free side) and the
  black padding around it (`divmod(.., 2)`: the odd pixel goes after);
- the views: the whole frame squashed to S x S (view 0), then the S x S crops of
  the padded pinpoint image in raster order;
- the crops' token grid (rows*g x cols*g, g = S // patch), the rectangle
  `unpad_image` keeps of it, OneVision's `anyres_max_N` downscale;
- where each kept token lands in the VisionZip layout.

Float expressions repeat transformers' operation by operation (e.g. `int(round(x, 7))`
in unpad): another rounding would move a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from zipvlm.bundle.errors import ModelFolderError

NEXT, ONEVISION = "llava_next", "llava_onevision"
FAMILIES = (NEXT, ONEVISION)
# The image's token order in the bundle: transformers' own (--no-zip), or the VisionZip
# authors' order of per-view VisionZip tokens.
TRANSFORMERS_LAYOUT, VISIONZIP_LAYOUT = "transformers", "visionzip"

Pinpoints = tuple[tuple[int, int], ...]  # (height, width) each, as image_grid_pinpoints lists them


def select_best_resolution(height: int, width: int, pinpoints: Pinpoints) -> tuple[int, int]:
    """(height, width) of the pinpoint the processor and the model pick for an image of this size."""
    best, best_effective, best_wasted = None, 0, math.inf
    for pin_h, pin_w in pinpoints:
        scale = min(pin_w / width, pin_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = pin_w * pin_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (pin_h, pin_w), effective, wasted
    if best is None:
        raise ModelFolderError("image_grid_pinpoints is empty")
    return best


def fit_inside(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int]:
    """The aspect-kept size inside the target (transformers' get_patch_output_size)."""
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


@dataclass(frozen=True)
class Box:
    """Rows [top, top + height) and columns [left, left + width)."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class AnyresGeometry:
    """The views and token grid of one frame size."""

    width: int  # the frame's size in pixels
    height: int
    view_size: int  # S: every view is S x S
    patch_size: int
    pinpoints: Pinpoints
    max_crops_area: int | None = None  # OneVision's anyres_max_N; None on LLaVA-NeXT

    # ---- pixels ------------------------------------------------------------------------------
    @property
    def best_resolution(self) -> tuple[int, int]:
        return select_best_resolution(self.height, self.width, self.pinpoints)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of crops; a partial last crop counts (the processor steps by S)."""
        best_h, best_w = self.best_resolution
        return -(-best_h // self.view_size), -(-best_w // self.view_size)

    @property
    def num_crops(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def num_views(self) -> int:
        return 1 + self.num_crops

    @property
    def placement(self) -> Box:
        """Where the resized frame sits on the black canvas of the best resolution."""
        best_h, best_w = self.best_resolution
        new_h, new_w = fit_inside(self.height, self.width, best_h, best_w)
        return Box((best_h - new_h) // 2, (best_w - new_w) // 2, new_h, new_w)

    def crop_box(self, crop: int) -> Box:
        """Crop `crop` (0-based, raster order) on the canvas."""
        row, col = divmod(crop, self.grid[1])
        return Box(row * self.view_size, col * self.view_size, self.view_size, self.view_size)

    # ---- tokens ------------------------------------------------------------------------------
    @property
    def side(self) -> int:
        """g: patches along a view's side."""
        return self.view_size // self.patch_size

    @property
    def crop_grid(self) -> tuple[int, int]:
        """(rows*g, cols*g): the crops' patch grid, crops side by side."""
        rows, cols = self.grid
        return rows * self.side, cols * self.side

    @property
    def unpadded_box(self) -> Box:
        """The rectangle of the crop grid that transformers' unpad_image keeps."""
        cur_h, cur_w = self.crop_grid
        if self.width / self.height > cur_w / cur_h:
            new_h = int(round(self.height * (cur_w / self.width), 7))
            pad = (cur_h - new_h) // 2
            return Box(pad, 0, cur_h - 2 * pad, cur_w)
        new_w = int(round(self.width * (cur_h / self.height), 7))
        pad = (cur_w - new_w) // 2
        return Box(0, pad, cur_h, cur_w - 2 * pad)

    @property
    def downscaled_grid(self) -> tuple[int, int] | None:
        """OneVision's bilinear target (rows, cols) when the unpadded grid exceeds anyres_max_N by
        more than 1.1x; None otherwise (and always on LLaVA-NeXT)."""
        if self.max_crops_area is None:
            return None
        box = self.unpadded_box
        ratio = math.sqrt(box.height * box.width / (self.max_crops_area * self.side**2))
        if ratio > 1.1:
            return int(box.height // ratio), int(box.width // ratio)
        return None

    @property
    def packed_grid(self) -> tuple[int, int]:
        """(rows, cols) of the crop tokens transformers feeds, before the newline column."""
        box = self.unpadded_box
        return self.downscaled_grid or (box.height, box.width)

    def num_full_tokens(self, base_tokens: int) -> int:
        """transformers' count: the base view's tokens, the packed crop grid, one newline per row."""
        rows, cols = self.packed_grid
        return base_tokens + rows * cols + rows

    def at_size(self, width: int, height: int) -> AnyresGeometry:
        return replace(self, width=width, height=height)

    def same_graph(self, other: AnyresGeometry, layout: str) -> bool:
        """Whether a graph exported for this size is exact for `other`'s: the VisionZip layout
        depends on the grid alone; transformers' also fixes the unpadded box and downscale."""
        if self.grid != other.grid:
            return False
        packed = (self.unpadded_box, self.packed_grid) == (other.unpadded_box, other.packed_grid)
        return layout == VISIONZIP_LAYOUT or packed

    # ---- a kept token, back on the frame ------------------------------------------------------
    def patch_box(self, view: int, patch: int) -> tuple[float, float, float, float] | None:
        """(x0, y0, x1, y1) in frame pixels of patch `patch` (row-major, CLS not counted) of `view`;
        None for a crop patch wholly on the black padding."""
        size = self.patch_size
        row, col = divmod(patch, self.side)
        if view == 0:  # the whole frame, squashed
            sx, sy = self.width / self.view_size, self.height / self.view_size
            return col * size * sx, row * size * sy, (col + 1) * size * sx, (row + 1) * size * sy
        crop, place = self.crop_box(view - 1), self.placement
        y0, x0 = crop.top + row * size - place.top, crop.left + col * size - place.left
        y1, x1 = min(y0 + size, place.height), min(x0 + size, place.width)
        y0, x0 = max(y0, 0), max(x0, 0)
        if y1 <= y0 or x1 <= x0:
            return None
        sx, sy = self.width / place.width, self.height / place.height
        return x0 * sx, y0 * sy, x1 * sx, y1 * sy

    def visionzip_rows(
        self, keep: list[list[int]], has_cls: bool, per_view: int
    ) -> dict[tuple[int, int], int]:
        """(view, token) -> row of image_embeds for every dominant token, in the VisionZip layout.

        `keep` holds each view's kept token indices, ascending; `per_view` is D + C. The
        base view's tokens come first in keep order; the crops' patches follow in raster
        order of the whole crop grid; then the crops' CLS tokens, crop by crop.
        """
        rows = {(0, token): i for i, token in enumerate(keep[0])}
        _, cols = self.grid
        width = cols * self.side
        patches = []
        for view, tokens in enumerate(keep[1:], start=1):
            crop_row, crop_col = divmod(view - 1, cols)
            for token in tokens:
                patch = token - int(has_cls)
                if patch >= 0:
                    row, col = divmod(patch, self.side)
                    raster = (crop_row * self.side + row) * width + crop_col * self.side + col
                    patches.append((raster, view, token))
        for rank, (_, view, token) in enumerate(sorted(patches)):
            rows[(view, token)] = per_view + rank
        if has_cls:
            for view in range(1, len(keep)):
                rows[(view, 0)] = per_view + len(patches) + view - 1
        return rows


def max_crops_area(vision_aspect_ratio: str | None) -> int:
    """N of OneVision's 'anyres_max_N' (its default is anyres_max_9)."""
    ratio = vision_aspect_ratio or "anyres_max_9"
    number = ratio.removeprefix("anyres_max_")
    if ratio == number or not number.isdigit() or int(number) < 1:
        raise ModelFolderError(f"vision_aspect_ratio '{ratio}' is not 'anyres_max_N' with N >= 1")
    return int(number)
