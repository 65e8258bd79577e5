"""The bundle format: written and read through one schema; a bundle it cannot trust is one line."""

from __future__ import annotations

import dataclasses
import json

import pytest
from bundles import sample_anyres_bundle, sample_bundle, sample_qwen_bundle

from zipvlm.bundle.errors import BundleError
from zipvlm.bundle.format import FORMAT_VERSION, Bundle, is_bundle


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "vision.onnx").write_bytes(b"graph bytes")
    (tmp_path / "tokenizer.json").write_text("{}")
    sample_bundle(tmp_path).write()
    return tmp_path


def rewrite_manifest(path, change) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_written_bundle_reads_back_equal_and_lists_every_file(bundle):
    opened = Bundle.open(bundle)
    assert json.loads((bundle / "manifest.json").read_text())["format_version"] == FORMAT_VERSION
    assert sorted(opened.files) == ["tokenizer.json", "vision.onnx"]
    assert dataclasses.replace(opened, files={}) == sample_bundle(bundle)
    assert is_bundle(bundle)
    assert "anyres" not in json.loads((bundle / "manifest.json").read_text())  # format 1 as before


def test_an_anyres_bundle_reads_back_equal_and_takes_views_per_image(tmp_path):
    (tmp_path / "vision.onnx").write_bytes(b"graph bytes")
    sample_anyres_bundle(tmp_path).write()
    opened = Bundle.open(tmp_path)
    assert dataclasses.replace(opened, files={}) == sample_anyres_bundle(tmp_path)
    assert opened.vision_io() == {
        "pixel_values": [None, 5, 3, 336, 336],
        "image_embeds": [None, 320, 64],
        "keep_indices": [None, 5, 54],
    }


def test_an_anyres_grid_its_camera_does_not_give_is_refused(tmp_path):
    (tmp_path / "vision.onnx").write_bytes(b"graph bytes")
    sample_anyres_bundle(tmp_path).write()
    rewrite_manifest(tmp_path, lambda m: m["anyres"].update(camera=[1008, 336]))  # a 1x3 grid
    with pytest.raises(
        BundleError, match=r"'anyres' grid \[2, 2\] does not follow from its camera size 1008x336"
    ):
        Bundle.open(tmp_path)


def test_vision_io_is_the_graph_contract(bundle):
    assert Bundle.open(bundle).vision_io() == {
        "pixel_values": [None, 3, 336, 336],
        "image_embeds": [None, 64, 64],
        "keep_indices": [None, 54],
    }
    no_zip = dataclasses.replace(
        sample_bundle(bundle),
        selection=dataclasses.replace(
            sample_bundle(bundle).selection,
            enabled=False,
            dominant=None,
            contextual=None,
            num_image_tokens=576,
        ),
    )
    assert no_zip.vision_io()["keep_indices"] == [None, 576]


def test_tampered_file_is_refused(bundle):
    (bundle / "vision.onnx").write_bytes(b"graph bytez")
    with pytest.raises(BundleError, match="vision.onnx does not match its sha256"):
        Bundle.open(bundle)


def test_missing_file_is_refused(bundle):
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is listed in the manifest but missing"):
        Bundle.open(bundle)


def test_other_format_version_is_refused(bundle):
    rewrite_manifest(bundle, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(BundleError, match="re-export it"):
        Bundle.open(bundle)


@pytest.mark.parametrize("section", ["vision", "visionzip", "preprocess", "llm", "graphs"])
def test_a_missing_section_is_one_line(bundle, section):
    rewrite_manifest(bundle, lambda m: m.pop(section))
    with pytest.raises(BundleError, match=f"has no '{section}' section"):
        Bundle.open(bundle)


def test_a_section_missing_a_field_is_one_line(bundle):
    rewrite_manifest(bundle, lambda m: m["vision"].pop("patch_size"))
    with pytest.raises(BundleError, match="'vision' section lacks patch_size"):
        Bundle.open(bundle)


@pytest.mark.parametrize("files", [None, {}])
def test_a_manifest_without_its_file_list_is_refused(bundle, files):
    rewrite_manifest(bundle, lambda m: m.pop("files") if files is None else m.update(files=files))
    with pytest.raises(BundleError, match="lists no files"):
        Bundle.open(bundle)


def test_a_manifest_that_is_not_json_is_refused(bundle):
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="is not valid JSON"):
        Bundle.open(bundle)


def test_directory_without_manifest_is_not_a_bundle(tmp_path):
    assert not is_bundle(tmp_path)
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.open(tmp_path)


def test_a_decoder_section_needs_genai_config(bundle):
    with pytest.raises(BundleError, match="no readable genai_config.json"):
        _ = Bundle.open(bundle).decoder


def test_a_qwen_bundle_reads_back_with_its_grid_and_contract(tmp_path):
    (tmp_path / "vision.onnx").write_bytes(b"graph bytes")
    sample_qwen_bundle(tmp_path).write()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["qwen"]["mrope_section"] == [2, 3, 3] and manifest["format_version"] == 1
    opened = Bundle.open(tmp_path)
    assert dataclasses.replace(opened, files={}) == sample_qwen_bundle(tmp_path)
    assert (opened.qwen.grid.merged_h, opened.qwen.grid.merged_w) == (17, 23)
    assert opened.vision_io() == {
        "pixel_values": [None, 3, 476, 644],
        "image_embeds": [None, 43, 64],
        "keep_indices": [None, 36],
    }


def test_a_llava_manifest_has_no_qwen_section(bundle):
    assert "qwen" not in json.loads((bundle / "manifest.json").read_text())
    assert Bundle.open(bundle).qwen is None


@pytest.mark.parametrize("broken", [[], {"camera_width": 640}])
def test_a_broken_qwen_section_is_one_line(tmp_path, broken):
    (tmp_path / "vision.onnx").write_bytes(b"graph bytes")
    sample_qwen_bundle(tmp_path).write()
    rewrite_manifest(tmp_path, lambda manifest: manifest.update(qwen=broken))
    with pytest.raises(BundleError, match="manifest.json('s 'qwen' section lacks| has no 'qwen' section)"):
        Bundle.open(tmp_path)
