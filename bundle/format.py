"""The bundle format: the one contract between export, calib, engine and the runtime.

A bundle is a directory with `manifest.json` and the files it lists, each with its
sha256. `Bundle` is that manifest as one frozen dataclass with typed sections; the
writers (export, calib) build the same dataclass and `Bundle.write` hashes the
files, so writer and readers share one schema. `Bundle.open` reads and verifies a
bundle once; everything after takes the `Bundle`, never a bare path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from zipvlm.bundle.anyres import FAMILIES, TRANSFORMERS_LAYOUT, VISIONZIP_LAYOUT, AnyresGeometry
from zipvlm.bundle.errors import BundleError
from zipvlm.bundle.grid import PatchGrid

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
GENAI_CONFIG = "genai_config.json"
# TensorRT plans are built on the target after export and bound to its GPU: they carry their
# own fingerprint (engines/vision.<target>.json) and are no part of the exported bundle's hashes.
ENGINES_DIR = "engines"
# The vision graph as exported, its float16 variant (export --fp16), and the Q/DQ graphs
# TensorRT builds --int8 / --fp8 plans from.
FLOAT_GRAPH, FP16_GRAPH = "vision.onnx", "vision.fp16.onnx"
INT8_GRAPH, FP8_GRAPH = "vision.int8.onnx", "vision.fp8.onnx"
EMBED_GRAPH, DECODER_GRAPH = "embed.onnx", "decoder.onnx"
# Qwen2.5-VL: the genai stage turning genai's 1D positions into the prompt's 3D ones, and the
# decoder input that takes them (docs/design.md, "Positions").
POSITIONS_GRAPH, MROPE_INPUT = "positions.onnx", "mrope_position_ids"
GENERATOR = "onnxruntime-genai decoder-pipeline (genai_config.json)"
RESAMPLE_FILTERS = ("bicubic", "bilinear")  # what the runtime's Pillow-identical resize implements
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class VisionSection:
    """The tower the vision graph was cut from (manifest key `vision`)."""

    tower: str  # "clip", "siglip" or "qwen2_5_vl"
    has_cls: bool
    image_size: int  # S: the graph takes [B, 3, S, S]; 0 on Qwen2.5-VL, whose input is not square
    patch_size: int
    num_tokens: int  # N: the tower's tokens at layer L (CLS included; Qwen2.5-VL: merged tokens)
    feature_layer: int  # the folder's vision_feature_layer
    layer_index: int  # 0-based layer L, the last that runs


@dataclass(frozen=True)
class SelectionSection:
    """Which tokens reach the language model (manifest key `visionzip`)."""

    enabled: bool  # False: every token, the model's own selection (--no-zip)
    dominant: int | None  # D
    contextual: int | None  # C
    num_image_tokens: int  # K: visual tokens per image the language model gets

    @property
    def kept_width(self) -> int:
        """Columns of `keep_indices`: D with VisionZip, else every selected token."""
        return self.dominant if self.enabled and self.dominant is not None else self.num_image_tokens


@dataclass(frozen=True)
class PreprocessSpec:
    """The image processor's steps as plain data (manifest key `preprocess`)."""

    image_size: int  # S, the square the steps end in; 0 on Qwen2.5-VL (resize: the grid's size)
    convert_rgb: bool
    pad_to_square: bool
    resize: Mapping[str, int] | None  # {"shortest_edge": n} or {"height": h, "width": w}
    resample: str  # one of RESAMPLE_FILTERS
    center_crop: Mapping[str, int] | None
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLE_FILTERS:
            raise BundleError(
                f"resample '{self.resample}' is not supported (supported: {', '.join(RESAMPLE_FILTERS)})"
            )
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))


@dataclass(frozen=True)
class AnyresSection:
    """Any-resolution views (manifest key `anyres`; LLaVA-NeXT and LLaVA-OneVision bundles only).

    The camera's size fixed the grid at export, so the graph takes `num_views` views per
    image. With VisionZip, `visionzip.dominant` and `.contextual` are per view.
    """

    family: str  # "llava_next" or "llava_onevision"
    camera: tuple[int, int]  # (width, height) the views were laid out for (export --image-size)
    pinpoints: tuple[tuple[int, int], ...]  # the processor's image_grid_pinpoints, (height, width)
    max_crops_area: int | None  # N of OneVision's anyres_max_N; None on LLaVA-NeXT
    grid: tuple[int, int]  # (rows, cols) of crops
    num_views: int  # 1 + rows * cols: the whole frame, then the crops in raster order
    layout: str  # "transformers" (--no-zip) or "visionzip" (the VisionZip authors' order)
    newline_rows: int  # image_newline rows among the image's tokens (0 with VisionZip)
    kept_per_view: int  # columns of keep_indices per view

    def __post_init__(self) -> None:
        object.__setattr__(self, "camera", tuple(self.camera))
        object.__setattr__(self, "pinpoints", tuple(tuple(p) for p in self.pinpoints))
        object.__setattr__(self, "grid", tuple(self.grid))
        if self.family not in FAMILIES or self.layout not in (TRANSFORMERS_LAYOUT, VISIONZIP_LAYOUT):
            raise BundleError(f"unknown any-res family '{self.family}' or layout '{self.layout}'")

    def geometry(self, vision: VisionSection) -> AnyresGeometry:
        """The views of a camera-sized frame."""
        width, height = self.camera
        return AnyresGeometry(
            width, height, vision.image_size, vision.patch_size, self.pinpoints, self.max_crops_area
        )


@dataclass(frozen=True)
class LanguageSection:
    """The language model's side of the prompt (manifest keys `llm`, `image_token_id`,
    `eos_token_ids`, `chat_template`)."""

    model_type: str
    hidden_size: int
    image_token_id: int
    eos_token_ids: tuple[int, ...]  # the same list genai_config.json stops on
    chat_template: str | None


@dataclass(frozen=True)
class QwenSection:
    """A Qwen2.5-VL bundle's fixed grid, its preprocessing bounds and its 3D positions
    (manifest key `qwen`; absent from LLaVA bundles)."""

    camera_width: int  # the frame size given to export --image-size
    camera_height: int
    image_width: int  # the graph's input: the camera frame as the processor resizes it
    image_height: int
    patch_size: int
    merge_size: int
    temporal_patch_size: int  # a still image fills its temporal patch with copies of itself
    min_pixels: int  # the processor's bounds on the resized area (preprocessor_config.json)
    max_pixels: int
    window_size: int  # window attention's side in pixels
    probe_block: int  # the last full-attention block: VisionZip's scores and keys
    mrope_section: tuple[int, int, int]  # rotary dims per (t, h, w) axis in the language model
    vision_start_token_id: int
    vision_end_token_id: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "mrope_section", tuple(self.mrope_section))

    @property
    def grid(self) -> PatchGrid:
        return PatchGrid(self.image_height, self.image_width, self.patch_size, self.merge_size)


@dataclass(frozen=True)
class DecoderSection:
    """decoder.onnx's KV-cache contract, from genai_config.json (written by the genai builder)."""

    filename: str
    context_length: int
    num_layers: int
    num_kv_heads: int
    head_size: int
    past_names: tuple[str, ...]  # past key, past value of layer 0, then layer 1, ...
    present_names: tuple[str, ...]  # the outputs in the same order

    @classmethod
    def from_genai_config(cls, config: dict[str, Any]) -> DecoderSection:
        model = config["model"]
        decoder = model["decoder"]
        inputs, outputs = decoder["inputs"], decoder["outputs"]
        layers = range(int(decoder["num_hidden_layers"]))
        return cls(
            filename=decoder["filename"],
            context_length=int(model["context_length"]),
            num_layers=len(layers),
            num_kv_heads=int(decoder["num_key_value_heads"]),
            head_size=int(decoder["head_size"]),
            past_names=tuple(
                inputs[key] % i for i in layers for key in ("past_key_names", "past_value_names")
            ),
            present_names=tuple(
                outputs[key] % i for i in layers for key in ("present_key_names", "present_value_names")
            ),
        )


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its manifest, typed. `files` is empty until `write` hashes them."""

    path: Path
    model_family: str  # "<model type>/<tower>/<language model>", e.g. "llava/clip/llama"
    source_model: str  # the folder it was exported from
    vision: VisionSection
    selection: SelectionSection
    preprocess: PreprocessSpec
    language: LanguageSection
    graphs: Mapping[str, Mapping[str, Any]]  # file name -> dtype, quantization, ...
    files: Mapping[str, str] = field(default_factory=dict)  # file name -> sha256
    generator: str = GENERATOR
    qwen: QwenSection | None = None  # Qwen2.5-VL: the grid and 3D positions
    anyres: AnyresSection | None = None  # any-resolution views (LLaVA-NeXT / OneVision)

    @classmethod
    def open(cls, path: Path, verify_hashes: bool = True) -> Bundle:
        """Read and check a bundle; raise `BundleError` with one clear line."""
        path = Path(path)
        manifest = _read_manifest(path)
        bundle = cls.from_manifest(path, manifest)
        if verify_hashes:
            bundle.verify()
        return bundle

    @classmethod
    def from_manifest(cls, path: Path, manifest: dict[str, Any]) -> Bundle:
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise BundleError(
                f"{path}: {MANIFEST_NAME} lists no files, so nothing can be verified: re-export the bundle"
            )
        language = {
            **_section(manifest, "llm", path),
            **{key: manifest.get(key) for key in ("image_token_id", "eos_token_ids", "chat_template")},
        }
        language["eos_token_ids"] = tuple(language.get("eos_token_ids") or ())
        vision = _typed(VisionSection, _section(manifest, "vision", path), "vision", path)
        return cls(
            path=path,
            model_family=str(manifest.get("model_family", "")),
            source_model=str(manifest.get("source_model", "")),
            vision=vision,
            selection=_typed(SelectionSection, _section(manifest, "visionzip", path), "visionzip", path),
            preprocess=_typed(PreprocessSpec, _section(manifest, "preprocess", path), "preprocess", path),
            language=_typed(LanguageSection, language, "llm", path),
            graphs=_section(manifest, "graphs", path),
            files=files,
            generator=str(manifest.get("generator", GENERATOR)),
            qwen=_typed(QwenSection, _section(manifest, "qwen", path), "qwen", path)
            if "qwen" in manifest
            else None,
            anyres=_anyres_section(manifest, vision, path),
        )

    def manifest(self) -> dict[str, Any]:
        """The JSON body of manifest.json (the keys are format version 1's)."""
        language = dataclasses.asdict(self.language)
        return {
            "format_version": FORMAT_VERSION,
            "model_family": self.model_family,
            "source_model": self.source_model,
            "vision": dataclasses.asdict(self.vision),
            "preprocess": {
                **dataclasses.asdict(self.preprocess),
                "mean": list(self.preprocess.mean),
                "std": list(self.preprocess.std),
            },
            "visionzip": dataclasses.asdict(self.selection),
            "llm": {"model_type": language["model_type"], "hidden_size": language["hidden_size"]},
            "image_token_id": language["image_token_id"],
            "eos_token_ids": list(language["eos_token_ids"]),
            "generator": self.generator,
            "chat_template": language["chat_template"],
            "graphs": {name: dict(entry) for name, entry in self.graphs.items()},
            "files": dict(self.files),
            **(
                {"qwen": {**dataclasses.asdict(self.qwen), "mrope_section": list(self.qwen.mrope_section)}}
                if self.qwen
                else {}
            ),
            **({"anyres": dataclasses.asdict(self.anyres)} if self.anyres else {}),
        }

    def write(self) -> Bundle:
        """Hash every regular file under the directory except the manifest and `engines/`,
        write manifest.json, and return the bundle with its file list."""
        files = {
            str(file.relative_to(self.path)): sha256_file(file)
            for file in sorted(self.path.rglob("*"))
            if file.is_file()
            and file.name != MANIFEST_NAME
            and file.relative_to(self.path).parts[0] != ENGINES_DIR
        }
        written = dataclasses.replace(self, files=files)
        (self.path / MANIFEST_NAME).write_text(json.dumps(written.manifest(), indent=2) + "\n")
        return written

    def verify(self) -> None:
        """Every listed file is present and matches its sha256."""
        for name, expected in self.files.items():
            file = self.path / name
            if not file.is_file():
                raise BundleError(f"{self.path}: {name} is listed in the manifest but missing")
            if sha256_file(file) != expected:
                raise BundleError(
                    f"{self.path}: {name} does not match its sha256 in the manifest "
                    "(modified or truncated): re-export the bundle"
                )

    def with_graph(self, name: str, entry: Mapping[str, Any]) -> Bundle:
        """The same bundle with one more (or a replaced) graph entry; `write` it to record it."""
        return dataclasses.replace(self, graphs={**self.graphs, name: dict(entry)})

    def moved_to(self, path: Path) -> Bundle:
        """The same bundle at another path (export writes it in a work directory, then moves it)."""
        return dataclasses.replace(self, path=Path(path))

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        """Whether the manifest lists `name` (a file added without re-writing it does not count)."""
        return name in self.files

    def sha256(self, name: str) -> str:
        """The sha256 the manifest lists for `name` (checked at open), else the file's: a
        multi-GB graph is hashed once, not again by every step that records its hash."""
        return self.files.get(name) or sha256_file(self.path / name)

    def vision_io(self) -> dict[str, list]:
        """The vision graph's inputs and outputs, shape per name (None: the dynamic batch).

        An any-res graph takes the views of each image on a second axis, [B, V, 3, S, S], and
        keeps indices per view, [B, V, D]: B stays the number of images on every tensor.
        """
        height = width = self.vision.image_size
        if self.qwen is not None:
            height, width = self.qwen.image_height, self.qwen.image_width
        embeds = [None, self.selection.num_image_tokens, self.language.hidden_size]
        if self.anyres is None:
            views, kept = [], [self.selection.kept_width]
        else:
            views, kept = [self.anyres.num_views], [self.anyres.num_views, self.anyres.kept_per_view]
        return {
            "pixel_values": [None, *views, 3, height, width],
            "image_embeds": embeds,
            "keep_indices": [None, *kept],
        }

    @property
    def name(self) -> str:
        """The bundle's folder name (the server's default model id)."""
        return self.path.resolve().name

    @cached_property
    def decoder(self) -> DecoderSection:
        """decoder.onnx's KV-cache contract, read from genai_config.json at first use."""
        config = self.path / GENAI_CONFIG
        try:
            return DecoderSection.from_genai_config(json.loads(config.read_text()))
        except OSError:
            raise BundleError(f"{self.path} has no readable {GENAI_CONFIG}: re-export the bundle") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(
                f"{config} is not a genai decoder config ({type(exc).__name__}: {exc}): re-export the bundle"
            ) from None


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_file = path / MANIFEST_NAME
    if not path.is_dir():
        raise BundleError(f"bundle not found: {path} is not a directory")
    if not manifest_file.is_file():
        raise BundleError(f"{path} is not a zipvlm bundle: no {MANIFEST_NAME}")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_file} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_file} is not a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format {version!r}; this zipvlm reads format "
            f"{FORMAT_VERSION}: re-export it with 'zipvlm export'"
        )
    return manifest


def _section(manifest: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = manifest.get(key)
    if not isinstance(value, dict):
        raise BundleError(f"{path}: {MANIFEST_NAME} has no '{key}' section: re-export the bundle")
    return value


def _typed(kind: type, values: dict[str, Any], key: str, path: Path):
    """`kind(**values)`, with a missing or unknown field one line instead of a TypeError."""
    names = {f.name for f in dataclasses.fields(kind)}
    missing = sorted(names - set(values))
    if missing:
        raise BundleError(
            f"{path}: {MANIFEST_NAME}'s '{key}' section lacks {', '.join(missing)}: re-export the bundle"
        )
    return kind(**{name: values[name] for name in names})


def _anyres_section(manifest: dict[str, Any], vision: VisionSection, path: Path) -> AnyresSection | None:
    """The optional `anyres` section, checked against the grid its camera size gives."""
    if "anyres" not in manifest:
        return None
    section = _typed(AnyresSection, _section(manifest, "anyres", path), "anyres", path)
    geometry = section.geometry(vision)
    if (geometry.grid, geometry.num_views) != (section.grid, section.num_views):
        raise BundleError(
            f"{path}: {MANIFEST_NAME}'s 'anyres' grid {list(section.grid)} does not follow from its "
            f"camera size {section.camera[0]}x{section.camera[1]} (that gives {list(geometry.grid)}): "
            "re-export the bundle"
        )
    return section


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


@dataclass(frozen=True)
class EnginePaths:
    """Files of one target's engine, side by side in `BUNDLE/engines/`."""

    plan: Path
    meta: Path  # the sidecar JSON: fingerprint, precision, build time
    timing_cache: Path
    report: Path  # static checks and polygraphy's view of the graph

    @classmethod
    def of(cls, bundle: Path, target: str) -> EnginePaths:
        folder, stem = Path(bundle) / ENGINES_DIR, f"vision.{target}"
        return cls(*(folder / f"{stem}.{kind}" for kind in ("plan", "json", "timing.cache", "report.txt")))
