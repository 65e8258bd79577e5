"""The any-res graph module in PyTorch: transformers' own packing with --no-zip, the slow reference
(and the VisionZip authors' restore step) with VisionZip per view.

Stated tolerance: features within 1e-5 of transformers' get_image_features, within 1e-4 of the
reference; kept indices and the order of every row identical.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import reference_model
from images import photo
from reference_anyres import Origin, authors_restore, reference_anyres_visionzip

from zipvlm.export.manifest import preprocess_spec
from zipvlm.models.anyres import anyres_geometry, load_anyres_graph
from zipvlm.models.anyres_layout import bilinear_matrix
from zipvlm.models.llava import open_llava_folder
from zipvlm.models.visionzip import VisionZipConfig
from zipvlm.runtime.preprocess import model_input
from zipvlm.runtime.preprocess_anyres import split_views


@pytest.fixture(scope="module")
def models(anyres_folders):
    return {
        name: (open_llava_folder(folder), reference_model(folder)) for name, folder in anyres_folders.items()
    }


def views_of(llava, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """(V, 3, S, S) normalised views of a photo of this size (the runtime's rule)."""
    geometry = anyres_geometry(llava, size)
    spec = dataclasses.replace(
        preprocess_spec(llava.preprocessor, llava.tower.image_size), pad_to_square=False
    )
    rgb = np.ascontiguousarray(photo(size[1], size[0], seed=seed)[:, :, ::-1])
    return torch.from_numpy(
        np.stack([model_input(v, spec) for v in split_views(rgb, geometry, spec.resample)])
    )


def test_bilinear_matrices_equal_torch_interpolate():
    grid = torch.randn(1, 3, 75, 135)
    want = F.interpolate(grid, [60, 108], mode="bilinear")
    got = torch.from_numpy(bilinear_matrix(75, 60)) @ grid @ torch.from_numpy(bilinear_matrix(135, 108)).T
    assert (got - want).abs().max() < 1e-5


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("llava-next", (640, 480)),
        ("llava-next", (1280, 720)),  # 28 of 48 rows kept: unpad's rounding
        ("llava-next", (336, 672)),  # a tall frame: columns cut
        ("llava-onevision", (640, 480)),
        ("llava-onevision", (1920, 1080)),  # 16 views, bilinear 75x135 -> 60x108
    ],
)
def test_no_zip_layout_is_transformers_packing(models, name, size):
    llava, model = models[name]
    views = views_of(llava, size)
    graph = load_anyres_graph(llava, anyres_geometry(llava, size), None)
    with torch.no_grad():
        ours, keep = graph(views[None])
        want = model.model.get_image_features(
            pixel_values=views[None], image_sizes=torch.tensor([[size[1], size[0]]])
        ).pooler_output[0]
    assert ours.shape[1] == want.shape[0]
    assert (ours[0] - want).abs().max() < 1e-5
    first = int(llava.tower.has_cls)
    assert keep.tolist() == [[list(range(first, llava.tower.num_tokens))] * len(views)]


@pytest.mark.parametrize(
    ("name", "size", "dominant", "contextual"),
    [
        ("llava-next", (640, 480), 54, 10),
        ("llava-next", (1008, 336), 27, 5),
        ("llava-onevision", (640, 480), 54, 10),
    ],
)
def test_visionzip_per_view_is_the_reference_in_the_authors_order(models, name, size, dominant, contextual):
    llava, model = models[name]
    geometry = anyres_geometry(llava, size)
    views = views_of(llava, size, seed=3)
    graph = load_anyres_graph(llava, geometry, VisionZipConfig(dominant, contextual), "eager")
    with torch.no_grad():
        ours, keep = graph(views[None])
    ref = reference_anyres_visionzip(model, views, geometry.grid[1], dominant, contextual)
    assert keep[0].tolist() == ref.keep_indices
    assert ours.shape[1] == geometry.num_views * (dominant + contextual) == len(ref.origins)
    assert (ours[0] - ref.image_embeds).abs().max() < 1e-4
    # every dominant row sits where the bundle's row map (calib, fp16 checks) says
    rows = geometry.visionzip_rows(ref.keep_indices, llava.tower.has_cls, dominant + contextual)
    placed = {(o.view, o.index): row for row, o in enumerate(ref.origins) if o.kind in ("dominant", "cls")}
    assert rows == placed
    if llava.tower.has_cls:  # CLS rows come between the crop patches and the contextual rows
        kinds = [o.kind for o in ref.origins[dominant + contextual :]]
        assert kinds == sorted(kinds, key=["dominant", "cls", "contextual"].index)
        assert ref.origins[-1] == Origin(geometry.num_views - 1, "contextual", contextual - 1)


def test_the_authors_restore_step_gives_the_same_tokens_on_clip(models):
    llava, _ = models["llava-next"]
    geometry = anyres_geometry(llava, (640, 480))
    graph = load_anyres_graph(llava, geometry, VisionZipConfig(54, 10))
    views = views_of(llava, (640, 480), seed=5)
    with torch.no_grad():
        ours, _ = graph(views[None])
        probe = graph.trunk(views)
        tokens, keep = graph.selector(probe.hidden, probe.scores, probe.keys)
        projected = graph.projector(tokens)  # (V, D + C, H): VisionZip's order per view
    shuffled = torch.stack([row[torch.randperm(len(row))] for row in keep[1:]])  # theirs is top-k order
    rows, cols = geometry.grid
    theirs = torch.cat([projected[0], authors_restore(projected[1:], shuffled, cols, rows, geometry.side)])
    assert torch.equal(theirs, ours[0])
