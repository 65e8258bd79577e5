"""The bundle format: the one contract shared by export, calib and runtime.

A bundle is a directory with `manifest.json` and the files it lists, each with its
sha256. The runtime owns this module; writers (export, calib) call `write_manifest`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from zipvlm.runtime.errors import BundleError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# TensorRT plans are built on the target after export and bound to its GPU: they carry their
# own fingerprint (engines/vision.<target>.json) and are no part of the exported bundle's hashes.
ENGINES_DIR = "engines"
# The vision graph as exported, its float16 variant (export --fp16), and the Q/DQ graphs
# TensorRT builds --int8 / --fp8 plans from.
FLOAT_GRAPH, FP16_GRAPH = "vision.onnx", "vision.fp16.onnx"
INT8_GRAPH, FP8_GRAPH = "vision.int8.onnx", "vision.fp8.onnx"
_HASH_CHUNK = 1 << 20


def listed_sha256(directory: Path, manifest: dict[str, Any], name: str) -> str:
    """The sha256 the manifest lists for `name` (checked when it was loaded), else the file's:
    a multi-GB graph is hashed once, not again by every step that records its hash."""
    return manifest.get("files", {}).get(name) or sha256_file(Path(directory) / name)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB graphs do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_bundle(directory: Path) -> bool:
    """True when `directory` holds a manifest that names itself a zipvlm bundle."""
    manifest = Path(directory) / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        return "format_version" in json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write `manifest.json`, adding the format version and the sha256 of every file.

    Every regular file under `directory` except the manifest itself and `engines/` is
    hashed, so `load_manifest` detects an exported file that changes afterwards.
    """
    directory = Path(directory)
    files = {
        str(path.relative_to(directory)): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
        and path.relative_to(directory).parts[0] != ENGINES_DIR
    }
    full = {"format_version": FORMAT_VERSION, **manifest, "files": files}
    (directory / MANIFEST_NAME).write_text(json.dumps(full, indent=2) + "\n")
    return full


def load_manifest(directory: Path, verify_hashes: bool = True) -> dict[str, Any]:
    """Read and check a bundle's manifest; raise `BundleError` with one clear line."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise BundleError(f"bundle not found: {directory} is not a directory")
    if not path.is_file():
        raise BundleError(f"{directory} is not a zipvlm bundle: no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{directory} has bundle format {version!r}; this zipvlm reads format "
            f"{FORMAT_VERSION}: re-export it with 'zipvlm export'"
        )
    if verify_hashes:
        for name, expected in manifest.get("files", {}).items():
            file = directory / name
            if not file.is_file():
                raise BundleError(f"{directory}: {name} is listed in the manifest but missing")
            if sha256_file(file) != expected:
                raise BundleError(
                    f"{directory}: {name} does not match its sha256 in the manifest "
                    "(modified or truncated): re-export the bundle"
                )
    return manifest
