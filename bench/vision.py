"""Vision-graph benchmark: real-size towers, random weights, onnxruntime CPU.

For each tower it times, in one process, median of repeated batch-1 runs:
  (a) the plain encoder up to the feature layer, exported to ONNX;
  (b) vision.onnx: encoder to layer L + VisionZip + projector;
  (c) the upstream way: HF eager forward with all hidden states and attentions,
      then VisionZip and the projector in PyTorch.
Latency does not depend on the weights, so random ones are used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from zipvlm.bench.profile import time_by_group
from zipvlm.bench.report import machine, machine_line, markdown_table, save_bar_chart
from zipvlm.export.vision import OPSET, export_vision_graph, quiet_exporter
from zipvlm.models.encoders import EncoderTrunk, TowerSpec, tower_spec
from zipvlm.models.llava import VisionGraph
from zipvlm.models.visionzip import VisionZip, VisionZipConfig
from zipvlm.runtime.providers import ort_session


@dataclass(frozen=True)
class TowerShape:
    """A published tower's shape and the LLaVA it feeds."""

    name: str
    family: str  # "clip" or "siglip"
    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    intermediate: int
    feature_layer: int
    llm_width: int


TOWERS = (
    TowerShape("CLIP ViT-L/14-336 -> 7B", "clip", 336, 14, 1024, 24, 16, 4096, -2, 4096),
    TowerShape("SigLIP so400m/14-384 -> 0.5B", "siglip", 384, 14, 1152, 27, 16, 4304, -1, 896),
)


@dataclass
class TowerResult:
    tower: str
    tokens: int
    kept: int
    encoder_ms: float  # (a)
    visionzip_ms: float  # (b)
    upstream_ms: float  # (c)
    visionzip_no_graph_opt_ms: float  # (b) with onnxruntime's graph optimizations off
    visionzip_one_thread_ms: float  # (b) on one thread
    selection_ms: float  # kernels of VisionZip's own nodes inside (b), from the profile
    projector_ms: float  # kernels of the projector inside (b)

    @property
    def zip_over_encoder(self) -> float:
        return self.visionzip_ms / self.encoder_ms

    @property
    def upstream_over_zip(self) -> float:
        return self.upstream_ms / self.visionzip_ms

    def row(self) -> dict:
        """Measured and derived figures, as the table, JSON and plot take them."""
        return {
            **asdict(self),
            "zip_over_encoder": self.zip_over_encoder,
            "upstream_over_zip": self.upstream_over_zip,
            "images_per_s": 1000 / self.visionzip_ms,
        }


class PlainEncoder(nn.Module):
    """(a): embeddings and layers 0..L on HF's own attention path, nothing else."""

    def __init__(self, trunk: EncoderTrunk):
        super().__init__()
        self.trunk = trunk

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.trunk.pre_norm(self.trunk.embeddings(pixel_values))
        for layer in [*self.trunk.layers, self.trunk.probe_layer]:
            hidden = layer(hidden, None)
        return hidden


def build_random(shape: TowerShape, attn: str):
    """A random-weight tower + projector of `shape`, as HF modules, and its spec."""
    from transformers import AutoConfig, AutoModel, LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    vision_type = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}[shape.family]
    vision = AutoConfig.for_model(
        vision_type,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        hidden_size=shape.width,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
    )
    vision._attn_implementation = attn
    text = AutoConfig.for_model("qwen2", hidden_size=shape.llm_width)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=shape.feature_layer)
    torch.manual_seed(0)
    tower = AutoModel.from_config(vision).eval()
    projector = LlavaMultiModalProjector(config).eval()
    return tower, projector, tower_spec(vision, shape.feature_layer)


def ort_timer(
    path: Path, threads: int, optimize: bool = True, disabled_optimizers: tuple[str, ...] = ()
) -> Callable[[np.ndarray], object]:
    session = ort_session(path, threads=threads, disabled_optimizers=disabled_optimizers, optimize=optimize)
    name = session.get_inputs()[0].name
    return lambda pixels: session.run(None, {name: pixels})


def upstream_timer(
    tower: nn.Module, projector: nn.Module, spec: TowerSpec, zip_config: VisionZipConfig
) -> Callable[[np.ndarray], object]:
    """(c): every layer with attention maps, then the selection in PyTorch."""
    visionzip = VisionZip(zip_config, spec.num_tokens, spec.has_cls)
    layer = tower.encoder.layers[spec.layer_index]
    heads, head_dim = spec.num_heads, spec.head_dim

    def run(pixels: np.ndarray):
        with torch.no_grad():
            out = tower(torch.from_numpy(pixels), output_hidden_states=True, output_attentions=True)
            attention = out.attentions[spec.layer_index].sum(dim=1)  # (B, N, N)
            scores = attention[:, 0] if spec.has_cls else attention.sum(dim=1)
            layer_in = out.hidden_states[spec.layer_index]
            keys = layer.self_attn.k_proj(layer.layer_norm1(layer_in))
            keys = keys.view(*keys.shape[:2], heads, head_dim).mean(dim=2)
            tokens, _ = visionzip(out.hidden_states[spec.layer_index + 1], scores, keys)
            return projector(tokens)

    return run


def interleaved_medians(
    runners: dict[str, Callable[[np.ndarray], object]], pixels: np.ndarray, repeats: int
) -> dict[str, float]:
    """Median ms per runner; rounds alternate runners so drift hits them all alike."""
    for run in runners.values():
        run(pixels)  # warm-up: allocations, kernel selection
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(pixels)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_tower(
    shape: TowerShape, zip_config: VisionZipConfig, repeats: int, threads: int, workdir: Path
) -> TowerResult:
    torch.set_num_threads(threads)
    pixels = (
        np.random.default_rng(0)
        .standard_normal((1, 3, shape.image_size, shape.image_size))
        .astype(np.float32)
    )
    tower, projector, spec = build_random(shape, attn="sdpa")
    selector = VisionZip(zip_config, spec.num_tokens, spec.has_cls)
    graph = VisionGraph(tower, projector, spec, selector).eval()
    zip_path = export_vision_graph(graph, (shape.image_size,) * 2, workdir / "vision.onnx")
    plain_path = workdir / "encoder.onnx"
    with quiet_exporter(), torch.no_grad():
        batch = torch.export.Dim("batch", min=1, max=64)
        torch.onnx.export(
            PlainEncoder(graph.trunk),
            (torch.zeros(2, 3, shape.image_size, shape.image_size),),
            dynamo=True,
            input_names=["pixel_values"],
            dynamic_shapes={"pixel_values": {0: batch}},
            opset_version=OPSET,
            verbose=False,
        ).save(str(plain_path))
    del graph
    tower.config._attn_implementation = "eager"  # upstream needs the attention maps
    runners = {
        "encoder": ort_timer(plain_path, threads),
        "visionzip": ort_timer(zip_path, threads),
        "upstream": upstream_timer(tower, projector, spec, zip_config),
        "no_graph_opt": ort_timer(zip_path, threads, optimize=False),
        "one_thread": ort_timer(zip_path, 1),
    }
    ms = interleaved_medians(runners, pixels, repeats)
    del runners
    kernels = time_by_group(zip_path, pixels, threads, workdir)
    return TowerResult(
        shape.name,
        spec.num_tokens,
        zip_config.num_output_tokens,
        ms["encoder"],
        ms["visionzip"],
        ms["upstream"],
        ms["no_graph_opt"],
        ms["one_thread"],
        kernels["selector"],
        kernels["projector"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zipvlm.bench.vision",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per stage (median)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for ORT and torch")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    zip_config = VisionZipConfig(54, 10)
    results = []
    for shape in TOWERS:
        with tempfile.TemporaryDirectory() as work:
            results.append(bench_tower(shape, zip_config, args.repeats, args.threads, Path(work)))
    rows = [result.row() for result in results]
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "threads": args.threads,
        "repeats": args.repeats,
        "batch": 1,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "machine": machine(),
    }
    (args.out / "vision.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    save_bar_chart(rows, args.out / "vision.png")
    print(json.dumps(rows, indent=2) if args.json else f"{machine_line()}\n\n{markdown_table(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
