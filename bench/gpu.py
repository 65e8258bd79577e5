"""GPU benchmark: the vision graph and the prefill it feeds, PyTorch FP16 on CUDA.

The modules are the ones `zipvlm export` traces (models/): VisionGraph keeping
every token against VisionGraph with VisionZip, then a random-weight language
model's prefill over the prompt each gives (text + image tokens; the logits of
the last position only, as a deployed decoder computes them). Pairs are
LLaVA-1.5-7B's (CLIP-L/336 -> Vicuna-7B) and LLaVA-OneVision-0.5B's (SigLIP
so400m/384 -> Qwen2-0.5B), one view each; and LLaVA-NeXT-7B's views of a
672x672 image (5 x CLIP-L/336 -> Vicuna-7B): transformers' 2,928 tokens against
VisionZip's 160 / 320 / 640, the paper's setting (its prefill: 8x at 160).
Each figure is the median of --repeats runs after warm-up, timed between CUDA
synchronisations; weights are random, since latency does not depend on them. PyTorch rather than TensorRT or
onnxruntime-gpu: it is what a GPU host without TensorRT runs (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from zipvlm.bench.report import GPU_COLUMNS, markdown_table, save_gpu_plot
from zipvlm.bench.vision import TOWERS, TowerShape, build_random
from zipvlm.bundle.anyres import AnyresGeometry
from zipvlm.models.anyres import AnyresVisionGraph
from zipvlm.models.anyres_layout import TransformersLayout, VisionZipLayout
from zipvlm.models.llava import VisionGraph
from zipvlm.models.tiny import NEXT_GRIDS
from zipvlm.models.visionzip import AllTokens, VisionZip, VisionZipConfig


@dataclass(frozen=True)
class LanguageShape:
    """A published language model's shape, enough for a random-weight one."""

    name: str
    model_type: str  # transformers' "llama" or "qwen2"
    width: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


VICUNA_7B = LanguageShape("Vicuna-7B", "llama", 4096, 32, 32, 32, 11008, 32000)
QWEN2_05B = LanguageShape("Qwen2-0.5B", "qwen2", 896, 24, 14, 2, 4864, 151936)
PAIRS = ((TOWERS[0], VICUNA_7B), (TOWERS[1], QWEN2_05B))
# None: every token, as the model itself selects them; then the paper's 64, 128 and 192.
SELECTIONS = (None, VisionZipConfig(54, 10), VisionZipConfig(108, 20), VisionZipConfig(162, 30))
# LLaVA-NeXT-7B at 672x672 (5 views); per view 32 / 64 / 128 (bench/anyres.py says why these D, C).
NEXT_672 = AnyresGeometry(672, 672, 336, 14, tuple((r * 336, c * 336) for r, c in NEXT_GRIDS))
ANYRES_PAIRS = ((TOWERS[0], VICUNA_7B, NEXT_672),)
ANYRES_SELECTIONS = (None, VisionZipConfig(27, 5), VisionZipConfig(54, 10), VisionZipConfig(108, 20))
TEXT_TOKENS = 40  # template and question around the image, as in bench.language


@contextlib.contextmanager
def creating_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly on `device` in `dtype`: a 7B model never visits host memory."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(default)


def build_language_model(shape: LanguageShape, device: torch.device, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        shape.model_type,
        hidden_size=shape.width,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        intermediate_size=shape.intermediate,
        vocab_size=shape.vocab,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with creating_on(device, dtype):
        return AutoModelForCausalLM.from_config(config).eval()


def median_ms(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median wall time of `run` between device synchronisations (kernels are asynchronous)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            run()
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def vision_graph(tower, projector, spec, selection, geometry: AnyresGeometry | None) -> VisionGraph:
    """The graph `zipvlm export` traces: one view, or an any-res geometry's views and layout."""
    if selection is None:
        selector: torch.nn.Module = AllTokens(spec.num_tokens, spec.has_cls)
    else:
        selector = VisionZip(selection, spec.num_tokens, spec.has_cls)
    if geometry is None:
        return VisionGraph(tower, projector, spec, selector)
    if selection is None:
        newline = torch.randn(projector.linear_2.out_features)
        layout: torch.nn.Module = TransformersLayout(geometry, newline, spec.num_tokens - int(spec.has_cls))
    else:
        layout = VisionZipLayout(geometry, selection.dominant, spec.num_tokens, spec.has_cls)
    return AnyresVisionGraph(tower, projector, spec, selector, layout, geometry.num_views)


def bench_pair(
    tower_shape: TowerShape,
    language: LanguageShape,
    selections,
    repeats: int,
    device: torch.device,
    dtype: torch.dtype,
    geometry: AnyresGeometry | None = None,
) -> list[dict]:
    """One row per selection: vision, prefill and their sum, and each as a ratio to every token."""
    tower, projector, spec = build_random(tower_shape, attn="sdpa")
    tower, projector = tower.to(device, dtype), projector.to(device, dtype)
    llm = build_language_model(language, device, dtype)
    views = [geometry.num_views] if geometry else []
    size = tower_shape.image_size
    pixels = torch.randn(1, *views, 3, size, size, device=device, dtype=dtype)
    where = f", {geometry.num_views} views of {geometry.width}x{geometry.height}" if geometry else ""
    rows = []
    for selection in selections:
        graph = vision_graph(tower, projector, spec, selection, geometry).to(device, dtype).eval()
        with torch.inference_mode():
            image_embeds = graph(pixels)[0]
        text = torch.randn(1, TEXT_TOKENS, language.width, device=device, dtype=dtype)
        prompt = torch.cat([text[:, : TEXT_TOKENS // 2], image_embeds, text[:, TEXT_TOKENS // 2 :]], dim=1)
        vision_ms = median_ms(lambda graph=graph: graph(pixels), device, repeats)
        prefill_ms = median_ms(
            lambda prompt=prompt: llm(inputs_embeds=prompt, use_cache=True, logits_to_keep=1), device, repeats
        )
        rows.append(
            {
                "pair": f"{tower_shape.name.split(' ->')[0]}{where} -> {language.name}",
                "setting": "all tokens" if selection is None else f"VisionZip K={image_embeds.shape[1]}",
                "image_tokens": image_embeds.shape[1],
                "prompt_tokens": prompt.shape[1],
                "vision_ms": vision_ms,
                "prefill_ms": prefill_ms,
                "first_token_ms": vision_ms + prefill_ms,
            }
        )
    full = rows[0]
    for row in rows:
        for key in ("vision", "prefill", "first_token"):
            row[f"{key}_ratio"] = full[f"{key}_ms"] / row[f"{key}_ms"]
    return rows


def device_facts(device: torch.device) -> dict:
    facts = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(
            gpu=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zipvlm.bench.gpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--device", default="cuda", help="cuda (default), cuda:N, or cpu for a slow functional run"
    )
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per figure (median)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"{parser.prog}: error: PyTorch sees no CUDA GPU here (torch {torch.__version__}): run it "
            "on a GPU host, or pass --device cpu for a slow functional run",
            file=sys.stderr,
        )
        return 2
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return report(
        run(PAIRS, SELECTIONS, args.repeats, device, getattr(torch, args.dtype), ANYRES_PAIRS),
        device_facts(device) | {"dtype": args.dtype, "repeats": args.repeats, "text_tokens": TEXT_TOKENS},
        args.out,
        args.json,
    )


def run(
    pairs,
    selections,
    repeats: int,
    device: torch.device,
    dtype: torch.dtype,
    anyres_pairs=(),
    anyres_selections=ANYRES_SELECTIONS,
) -> list[dict]:
    jobs = [(tower, language, selections, None) for tower, language in pairs]
    jobs += [(tower, language, anyres_selections, geometry) for tower, language, geometry in anyres_pairs]
    rows = []
    for tower_shape, language, chosen, geometry in jobs:
        rows += bench_pair(tower_shape, language, chosen, repeats, device, dtype, geometry)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next pair's models replace this one's
    return rows


def report(rows: list[dict], meta: dict, out: Path, as_json: bool) -> int:
    """gpu.json and gpu.png under `out`, and the table (or JSON) on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    save_gpu_plot(rows, out / "gpu.png")
    where = meta.get("gpu", meta["device"])
    print(
        json.dumps(rows, indent=2)
        if as_json
        else f"device: {where}, {meta['dtype']}, torch {meta['torch']}\n\n{markdown_table(rows, GPU_COLUMNS)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
