"""The runtime refuses a bundle it cannot trust, with one clear line."""

from __future__ import annotations

import json

import pytest

from zipvlm.runtime.bundle import FORMAT_VERSION, is_bundle, load_manifest, write_manifest
from zipvlm.runtime.errors import BundleError


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "vision.onnx").write_bytes(b"graph bytes")
    (tmp_path / "tokenizer.json").write_text("{}")
    write_manifest(tmp_path, {"model_family": "llava/clip/llama"})
    return tmp_path


def test_written_manifest_loads_and_lists_every_file(bundle):
    manifest = load_manifest(bundle)
    assert manifest["format_version"] == FORMAT_VERSION
    assert sorted(manifest["files"]) == ["tokenizer.json", "vision.onnx"]
    assert is_bundle(bundle)


def test_tampered_file_is_refused(bundle):
    (bundle / "vision.onnx").write_bytes(b"graph bytez")
    with pytest.raises(BundleError, match="vision.onnx does not match its sha256"):
        load_manifest(bundle)


def test_missing_file_is_refused(bundle):
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is listed in the manifest but missing"):
        load_manifest(bundle)


def test_other_format_version_is_refused(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="re-export it"):
        load_manifest(bundle)


def test_directory_without_manifest_is_not_a_bundle(tmp_path):
    assert not is_bundle(tmp_path)
    with pytest.raises(BundleError, match="no manifest.json"):
        load_manifest(tmp_path)
